"""Network: isolated subnets, and without NAT the VPC endpoints the Lambdas call."""

from __future__ import annotations

from aws_cdk.assertions import Match

from tests.cdk_app.support import Synth

INTERFACE_SERVICES = ("secretsmanager", "rds", "cloudformation", "events", "lambda")


def service_names(synth: Synth, endpoint_type: str) -> set[str]:
    names = set()
    for endpoint in synth.resources("database", "AWS::EC2::VPCEndpoint").values():
        properties = endpoint["Properties"]
        if properties.get("VpcEndpointType", "Gateway") != endpoint_type:
            continue
        name = properties["ServiceName"]
        names.add(name if isinstance(name, str) else "".join(
            part if isinstance(part, str) else "" for part in name["Fn::Join"][1]))
    return names


def test_without_nat_every_subnet_is_isolated_and_the_endpoints_exist(dev: Synth) -> None:
    # GIVEN the dev stage (egress: vpc-endpoints) WHEN synthesized
    template = dev.database
    # THEN there is no internet or NAT gateway and no public subnet
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    for subnet in dev.resources("database", "AWS::EC2::Subnet").values():
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False
    # AND two AZs, each with a database and a function subnet
    template.resource_count_is("AWS::EC2::Subnet", 4)
    # AND the S3 gateway endpoint (the ResponseURL) and one interface endpoint per API
    assert service_names(dev, "Gateway") == {"com.amazonaws..s3"}  # region: a Ref
    assert service_names(dev, "Interface") == {
        f"com.amazonaws.eu-west-1.{service}" for service in INTERFACE_SERVICES}
    template.has_resource_properties("AWS::EC2::VPCEndpoint", {
        "VpcEndpointType": "Interface", "PrivateDnsEnabled": True})


def test_endpoints_admit_only_the_lambdas(dev: Synth) -> None:
    functions_sg = [key for key in dev.resources("database", "AWS::EC2::SecurityGroup")
                    if key.startswith("NetworkFunctionsSecurityGroup")]
    assert len(functions_sg) == 1
    for endpoint in dev.resources("database", "AWS::EC2::VPCEndpoint").values():
        if endpoint["Properties"].get("VpcEndpointType") != "Interface":
            continue
        group = endpoint["Properties"]["SecurityGroupIds"][0]["Fn::GetAtt"][0]
        ingress = dev.templates["database"]["Resources"][group]["Properties"].get(
            "SecurityGroupIngress", [])
        assert ingress == [], "interface endpoints must not be open to the whole VPC"
    dev.database.has_resource_properties("AWS::EC2::SecurityGroupIngress", {
        "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
        "SourceSecurityGroupId": {"Fn::GetAtt": [functions_sg[0], "GroupId"]}})


def test_functions_security_group_sends_only_https_and_postgres(dev: Synth) -> None:
    group = next(value for key, value in dev.resources("database", "AWS::EC2::SecurityGroup")
                 .items() if key.startswith("NetworkFunctionsSecurityGroup"))
    egress = group["Properties"]["SecurityGroupEgress"]
    assert {(rule["IpProtocol"], rule["FromPort"]) for rule in egress} == {("tcp", 443)}
    dev.database.has_resource_properties("AWS::EC2::SecurityGroupEgress", {
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432})


def test_flow_logs_go_to_a_log_group_with_retention(dev: Synth) -> None:
    dev.database.resource_count_is("AWS::EC2::FlowLog", 1)
    dev.database.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})


def test_with_a_nat_gateway_lambdas_get_egress_subnets_and_no_endpoints(
    variants: dict[str, Synth],
) -> None:
    nat = variants["prod-nat"]
    nat.database.resource_count_is("AWS::EC2::NatGateway", 1)
    nat.database.resource_count_is("AWS::EC2::VPCEndpoint", 0)
    nat.database.has_resource_properties("AWS::EC2::Route", {
        "DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": Match.any_value()})
