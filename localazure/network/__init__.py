"""Microsoft.Network: virtual networks and subnets, network security groups and their rules,
public IP addresses (allocated from 127.0.0.0/8, see ``addresses``) and network interfaces (whose
private addresses are data only). ``security`` decides whether a connection to a VM's port is
allowed by the NSGs on its NIC and subnet."""

NAMESPACE = "Microsoft.Network"
VNET_TYPE = f"{NAMESPACE}/virtualNetworks"
SUBNET_TYPE = f"{VNET_TYPE}/subnets"
NSG_TYPE = f"{NAMESPACE}/networkSecurityGroups"
RULE_TYPE = f"{NSG_TYPE}/securityRules"
PIP_TYPE = f"{NAMESPACE}/publicIPAddresses"
NIC_TYPE = f"{NAMESPACE}/networkInterfaces"
