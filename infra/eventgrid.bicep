// Per monitored subscription, after the code is deployed (scripts/postdeploy.sh): the Azure
// subscription system topic and an event subscription to the on_resource_event function.
targetScope = 'resourceGroup'

@description('Resource id of the function app (from the main deployment)')
param functionAppId string

@description('Resource id of the app storage account that receives dead letters')
param deadLetterStorageId string

@description('Also subscribe to Azure Resource Notifications (resources topic; preview)')
param resourceNotifications bool = false

// Exactly the ARM operation prefixes the targeting code handles (shared/targeting.py
// HANDLED_OPERATIONS); tests/test_infra.py keeps the two lists identical. Event Grid allows 25
// advanced-filter values per subscription: five are used.
var handledOperations = [
  'Microsoft.Storage/storageAccounts'
  'Microsoft.Network/networkSecurityPerimeters'
  'Microsoft.Compute/virtualMachines'
  'Microsoft.DataProtection/backupVaults/backupInstances'
  'Microsoft.KeyVault/vaults'
]

var deadLetterParts = split(deadLetterStorageId, '/')

resource topic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = {
  name: 'evgt-nspdrift-${subscription().subscriptionId}'
  location: 'global'
  identity: { type: 'SystemAssigned' }
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

// The topic's identity writes dead letters to the app's storage (no keys).
module deadLetterRole 'app/deadletter-role.bicep' = {
  scope: resourceGroup(deadLetterParts[2], deadLetterParts[4])
  name: 'nspdrift-deadletter-${uniqueString(topic.id)}'
  params: {
    storageAccountName: last(deadLetterParts)
    principalId: topic.identity.principalId
  }
}

resource toFunction 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2024-06-01-preview' = {
  parent: topic
  name: 'nspdrift-resource-changes'
  dependsOn: [deadLetterRole]
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/on_resource_event'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
        'Microsoft.Resources.ResourceDeleteSuccess'
        'Microsoft.Resources.ResourceActionSuccess'
      ]
      advancedFilters: [
        {
          operatorType: 'StringBeginsWith'
          key: 'data.operationName'
          values: handledOperations
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageId
          blobContainerName: 'eventgrid-deadletter'
        }
      }
    }
  }
}

resource notificationsTopic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = if (resourceNotifications) {
  name: 'evgt-nspdrift-arn-${subscription().subscriptionId}'
  location: 'global'
  properties: {
    source: subscription().id
    topicType: 'Microsoft.ResourceNotifications.Resources'
  }
}

resource notifications 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2024-06-01-preview' = if (resourceNotifications) {
  parent: notificationsTopic
  name: 'nspdrift-storage-notifications'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: { resourceId: '${functionAppId}/functions/on_resource_event', maxEventsPerBatch: 1 }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.ResourceNotifications.Resources.CreatedOrUpdated'
        'Microsoft.ResourceNotifications.Resources.Deleted'
      ]
      advancedFilters: [
        { operatorType: 'StringIn', key: 'data.resourceInfo.type', values: ['Microsoft.Storage/storageAccounts'] }
      ]
    }
    retryPolicy: { maxDeliveryAttempts: 30, eventTimeToLiveInMinutes: 1440 }
  }
}
