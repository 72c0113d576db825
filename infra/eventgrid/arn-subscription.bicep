// Event subscription on the Azure Resource Notifications topic (Microsoft.ResourceNotifications.Resources,
// Preview): storage accounts created, updated or deleted. The events carry a body snapshot (of a
// possibly old API version); nsp-drift treats it as a hint and re-reads the account. The
// Microsoft.Resources topic still covers sub-resources (policies, shares, perimeters) that this
// one does not emit.

@description('The Microsoft.ResourceNotifications.Resources system topic (in this resource group).')
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
        'Microsoft.ResourceNotifications.Resources.CreatedOrUpdated'
        'Microsoft.ResourceNotifications.Resources.Deleted'
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.resourceInfo.type'
          values: [
            'Microsoft.Storage/storageAccounts'
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
