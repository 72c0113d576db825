// Reader on one monitored subscription for the function's identity. Deployed by main.bicep once
// per monitored subscription (unless a management group is used: reader-mg.bicep).
//
// Reader (*/read) covers every call nsp-drift makes: storage account GETs and their children
// (networkSecurityPerimeterConfigurations/read, objectReplicationPolicies, managementPolicies,
// inventoryPolicies, blobServices, fileServices/shares), NSPs and their profiles, access rules and
// resource associations, virtual machines (unmanaged disks), Data Protection backup instances and
// policies, Key Vault properties, and Azure Resource Graph queries (a POST that needs no action of
// its own: Resource Graph returns only what the caller can read). It includes no write, no
// delete and no POST action (no listKeys, no listAccountSas, no .../reconcile/action), and no
// data action.

targetScope = 'subscription'

@description('Object id of the function app\'s system-assigned identity.')
param principalId string

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, 'acdd72a7-3385-48ef-bd42-f606fba81ae7')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'acdd72a7-3385-48ef-bd42-f606fba81ae7')
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'nsp-drift: read storage accounts, perimeters, VMs, backup instances and vaults'
  }
}
