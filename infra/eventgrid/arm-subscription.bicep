// Event subscription on the Azure-subscription system topic (Microsoft.Resources.Subscriptions):
// successful ARM writes, deletes and actions whose operation name starts with one of the prefixes
// nsp-drift acts on, delivered one event per call to the on_resource_event function.

@description('The Microsoft.Resources.Subscriptions system topic (in this resource group).')
param topicName string

@description('Event subscription name.')
param name string

@description('<function app id>/functions/on_resource_event')
param functionResourceId string

param deadLetterStorageAccountId string
param deadLetterContainerName string

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: topicName
}

resource eventSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: name
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: functionResourceId
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
      // Exactly shared/core/targeting.py HANDLED_OPERATIONS (tests/test_infra.py checks). Comparisons are
      // case-insensitive. Event Grid allows at most 25 advanced-filter values per event subscription.
      advancedFilters: [
        {
          operatorType: 'StringBeginsWith'
          key: 'data.operationName'
          values: [
            'Microsoft.Storage/storageAccounts'
            'Microsoft.Network/networkSecurityPerimeters'
            'Microsoft.Compute/virtualMachines'
            'Microsoft.DataProtection/backupVaults/backupInstances'
            'Microsoft.KeyVault/vaults'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output id string = eventSubscription.id
