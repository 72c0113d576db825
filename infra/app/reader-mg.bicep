// Reader at a management group for the function's identity, instead of one assignment per
// subscription (reader.bicep has the reasoning: Reader covers every read and nothing else).
// A subscription-scope deployment cannot target a management group, so scripts/postdeploy.*
// deploys this with `az deployment mg create` when NSP_DRIFT_READER_MANAGEMENT_GROUP is set.
// NSP_DRIFT_SUBSCRIPTIONS still limits what the app evaluates.

targetScope = 'managementGroup'

@description('Object id of the function app\'s system-assigned identity.')
param principalId string

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(managementGroup().id, principalId, 'acdd72a7-3385-48ef-bd42-f606fba81ae7')
  properties: {
    roleDefinitionId: tenantResourceId('Microsoft.Authorization/roleDefinitions', 'acdd72a7-3385-48ef-bd42-f606fba81ae7')
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'nsp-drift: read storage accounts, perimeters, VMs, backup instances and vaults'
  }
}
