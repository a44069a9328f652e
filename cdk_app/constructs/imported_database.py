"""A database that exists already (a stage's `existingDatabase`), imported by reference.

Nothing here creates or changes a resource: the VPC is looked up by id (the lookup is
committed in cdk.context.json, so synth stays offline), the subnets are chosen from it by id,
the security group is imported immutable (no rule is ever added to it), the secret by its
complete ARN and the instance or cluster by its attributes. The template of the stack that
imports them gains no resource from this construct.
"""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from cdk_app.config import ExistingDatabase
from cdk_app.lambda_function import FunctionNetwork


class ImportedDatabase(Construct):
    def __init__(self, scope: Construct, id_: str, *, existing: ExistingDatabase) -> None:
        super().__init__(scope, id_)
        self.existing = existing
        self.vpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=existing.vpc_id)
        self.security_group = ec2.SecurityGroup.from_security_group_id(
            self, "SecurityGroup", existing.security_group_id, mutable=False)
        self.network = FunctionNetwork(
            vpc=self.vpc,
            subnets=ec2.SubnetSelection(
                subnet_filters=[ec2.SubnetFilter.by_ids(list(existing.subnet_ids))]),
            security_group=self.security_group)
        self._check_subnets()
        self.secret = secretsmanager.Secret.from_secret_complete_arn(
            self, "Secret", existing.secret_arn)
        self.database: rds.IDatabaseInstance | rds.IDatabaseCluster
        if existing.cluster:
            self.database = rds.DatabaseCluster.from_database_cluster_attributes(
                self, "Cluster", cluster_identifier=existing.identifier,
                cluster_endpoint_address=existing.endpoint, port=existing.port,
                security_groups=[self.security_group])
        else:
            self.database = rds.DatabaseInstance.from_database_instance_attributes(
                self, "Instance", instance_identifier=existing.identifier,
                instance_endpoint_address=existing.endpoint, port=existing.port,
                security_groups=[self.security_group])

    def _check_subnets(self) -> None:
        """Every configured subnet is in the looked-up VPC (once the lookup is known: the
        CDK CLI's first pass runs with a placeholder VPC, then fetches the real one)."""
        if self.vpc.vpc_id == _PENDING_LOOKUP_VPC_ID:
            return
        found = {subnet.subnet_id for subnet in self.network.selected_subnets()}
        missing = [subnet for subnet in self.existing.subnet_ids if subnet not in found]
        if missing:
            raise ValueError(
                f"existingDatabase.subnetIds {', '.join(missing)} are not subnets of "
                f"{self.existing.vpc_id} as cdk.context.json records it; check the ids, or "
                "refresh the lookup (`cdk context --reset` for its key, then `cdk synth` with "
                "credentials)")


# The id Vpc.from_lookup answers while the lookup is still missing from the context.
_PENDING_LOOKUP_VPC_ID = "vpc-12345"
