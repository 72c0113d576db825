// Storage Blob Data Contributor for a system topic's identity on the dead-letter container of the
// app's storage account, and nothing else (not the account, not the other containers). Event Grid
// writes undeliverable events there with deadLetterWithResourceIdentity: no key, no SAS.

@description('The app\'s storage account (in this resource group).')
param storageAccountName string

@description('Dead-letter blob container on it.')
param containerName string

@description('Object id of the system topic\'s system-assigned identity.')
param topicPrincipalId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: containerName
}

resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(container.id, topicPrincipalId, 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')
    principalId: topicPrincipalId
    principalType: 'ServicePrincipal'
    description: 'nsp-drift: Event Grid dead letters'
  }
}
