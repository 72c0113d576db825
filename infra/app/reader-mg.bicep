// Reader on a management group (every subscription under it) for the function app's identity.
targetScope = 'managementGroup'

param principalId string

var readerRoleId = 'acdd72a7-3385-48ef-bd42-f606fba81ae7' // Reader

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(managementGroup().id, principalId, readerRoleId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: tenantResourceId('Microsoft.Authorization/roleDefinitions', readerRoleId)
  }
}
