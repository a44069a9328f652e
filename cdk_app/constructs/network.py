"""The VPC: isolated subnets for the database and the Lambdas, and their way to AWS APIs.

Without a NAT gateway (`egress: vpc-endpoints`) the Lambdas reach AWS only through VPC
endpoints, one per API they call:

| endpoint | who calls it |
|---|---|
| S3 (gateway) | crhelper's answer: CloudFormation's ResponseURL is a pre-signed S3 URL |
| Secrets Manager | both Lambdas read the database secret |
| RDS | the pre-migration snapshot and its status |
| CloudFormation | `DescribeStacks`, `DescribeStackResource`: the own stack and resource |
| EventBridge, Lambda | crhelper's polling: a scheduled rule re-invokes the function |

CloudWatch metrics need none: they are embedded-metric-format log lines.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Rds": ec2.InterfaceVpcEndpointAwsService.RDS,
    "CloudFormation": ec2.InterfaceVpcEndpointAwsService.CLOUDFORMATION,
    "EventBridge": ec2.InterfaceVpcEndpointAwsService.EVENTBRIDGE,
    "Lambda": ec2.InterfaceVpcEndpointAwsService.LAMBDA_,
}
HTTPS = 443
MAX_AZS = 2  # an RDS subnet group needs two AZs; Multi-AZ and Aurora use both


class Network(Construct):
    def __init__(
        self, scope: Construct, id_: str, *, nat_gateway: bool,
        log_retention: logs.RetentionDays, removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, id_)
        function_subnet_type = (ec2.SubnetType.PRIVATE_WITH_EGRESS if nat_gateway
                                else ec2.SubnetType.PRIVATE_ISOLATED)
        subnets = [
            ec2.SubnetConfiguration(name="Database", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED,
                                    cidr_mask=24),
            ec2.SubnetConfiguration(name="Functions", subnet_type=function_subnet_type,
                                    cidr_mask=24),
        ]
        if nat_gateway:
            subnets.append(ec2.SubnetConfiguration(name="Public",
                                                   subnet_type=ec2.SubnetType.PUBLIC,
                                                   cidr_mask=26))
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=log_retention,
                                  removal_policy=removal_policy)
        self.vpc = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            max_azs=MAX_AZS,
            nat_gateways=1 if nat_gateway else 0,
            subnet_configuration=subnets,
            flow_logs={"All": ec2.FlowLogOptions(
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                traffic_type=ec2.FlowLogTrafficType.ALL,
            )},
        )
        self.database_subnets = ec2.SubnetSelection(subnet_group_name="Database")
        self.function_subnets = ec2.SubnetSelection(subnet_group_name="Functions")

        # The Lambdas' security group: HTTPS out to AWS APIs (in isolated subnets only the
        # endpoints answer); the database adds its own port (Database's `clients`).
        self.functions_security_group = ec2.SecurityGroup(
            self, "FunctionsSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
            description="Migration and application Lambdas: HTTPS to AWS APIs, PostgreSQL "
                        "to the database",
        )
        self.functions_security_group.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS),
            "AWS APIs through the VPC endpoints (or the NAT gateway)")

        self.endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        if not nat_gateway:
            self.vpc.add_gateway_endpoint(
                "S3", service=ec2.GatewayVpcEndpointAwsService.S3,
                subnets=[self.function_subnets])
            for name, service in INTERFACE_ENDPOINTS.items():
                endpoint = self.vpc.add_interface_endpoint(
                    name, service=service, subnets=self.function_subnets,
                    private_dns_enabled=True, open=False)
                # Only the Lambdas may use the endpoints, not everything in the VPC.
                endpoint.connections.allow_default_port_from(
                    self.functions_security_group, "HTTPS from the Lambdas")
                self.endpoints[name] = endpoint
