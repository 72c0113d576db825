// Reader on one monitored subscription for the function app's managed identity.
targetScope = 'subscription'

param principalId string

var readerRoleId = 'acdd72a7-3385-48ef-bd42-f606fba81ae7' // Reader

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, readerRoleId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', readerRoleId)
  }
}
