// Event Grid for ONE monitored subscription: its Azure-subscription system topic
// (Microsoft.Resources.Subscriptions) and an event subscription that delivers ARM write, delete
// and action events to the on_resource_event function; optionally also an Azure Resource
// Notifications topic (Microsoft.ResourceNotifications.Resources) for storage account changes.
// Undeliverable events are dead-lettered to the app's storage account with the topic's own
// identity (no keys, no SAS).
//
// Deployed by scripts/postdeploy.* AFTER the code (the function must exist and be indexed, or
// the event subscription fails with "Destination endpoint not found"), once per monitored
// subscription:
//
//   az deployment sub create --subscription <monitored> --location <region> \
//     --template-file infra/eventgrid.bicep --parameters functionAppId=... deadLetterStorageAccountId=...
//
// Azure allows one system topic of a type per subscription: when one already exists, pass its
// name and resource group with useExisting...=true (the hook detects this); it needs a
// system-assigned identity for dead-lettering.

targetScope = 'subscription'

@description('Resource id of the function app (azd output AZURE_FUNCTION_APP_ID); it may be in another subscription.')
param functionAppId string

@description('Function that receives the events: the Event Grid trigger\'s indexed name (handlers/events.py).')
param functionName string = 'on_resource_event'

@description('Resource id of the app\'s storage account (azd output AZURE_STORAGE_ACCOUNT_ID).')
param deadLetterStorageAccountId string

@description('Dead-letter blob container on that account (azd output NSPDRIFT_DEADLETTER_CONTAINER).')
param deadLetterContainerName string = 'eventgrid-deadletter'

@description('Name of the event subscription(s); one per nsp-drift environment, so several can share a topic.')
@minLength(3)
@maxLength(64)
param eventSubscriptionName string = 'nsp-drift'

@description('Region of the resource group created for the topics.')
param location string = deployment().location

@description('Resource group created (if needed) in this subscription for the topics nsp-drift creates.')
param resourceGroupName string = 'rg-nspdrift-events'

param tags object = {
  application: 'nsp-drift'
}

@description('Name of the Microsoft.Resources.Subscriptions system topic (created, or the existing one).')
param systemTopicName string = 'nspdrift-arm'

@description('Resource group of that topic.')
param systemTopicResourceGroupName string = resourceGroupName

@description('True: the subscription already has a Microsoft.Resources.Subscriptions topic; use it (it must have a system-assigned identity).')
param useExistingSystemTopic bool = false

@description('Also subscribe to Azure Resource Notifications (Microsoft.ResourceNotifications.Resources, Preview): storage account created/updated/deleted with a body snapshot.')
param enableResourceNotifications bool = false

@description('Name of the Microsoft.ResourceNotifications.Resources system topic (created, or the existing one).')
param resourceNotificationsTopicName string = 'nspdrift-arn'

@description('Resource group of that topic.')
param resourceNotificationsTopicResourceGroupName string = resourceGroupName

@description('True: the subscription already has a Microsoft.ResourceNotifications.Resources topic; use it (it must have a system-assigned identity).')
param useExistingResourceNotificationsTopic bool = false

var createsATopic = !useExistingSystemTopic || (enableResourceNotifications && !useExistingResourceNotificationsTopic)

// /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Storage/storageAccounts/{name}
var deadLetterAccountParts = split(deadLetterStorageAccountId, '/')

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = if (createsATopic) {
  name: resourceGroupName
  location: location
  tags: tags
}

module armTopic 'eventgrid/topic.bicep' = {
  name: 'nspdrift-arm-topic'
  scope: resourceGroup(systemTopicResourceGroupName)
  dependsOn: [rg]
  params: {
    name: systemTopicName
    topicType: 'Microsoft.Resources.Subscriptions'
    useExisting: useExistingSystemTopic
    tags: tags
  }
}

module armDeadLetterAccess 'eventgrid/deadletter-rbac.bicep' = {
  name: 'nspdrift-arm-deadletter-${uniqueString(subscription().id)}'
  scope: resourceGroup(deadLetterAccountParts[2], deadLetterAccountParts[4])
  params: {
    storageAccountName: deadLetterAccountParts[8]
    containerName: deadLetterContainerName
    topicPrincipalId: armTopic.outputs.principalId
  }
}

module armSubscription 'eventgrid/arm-subscription.bicep' = {
  name: 'nspdrift-arm-subscription'
  scope: resourceGroup(systemTopicResourceGroupName)
  dependsOn: [armDeadLetterAccess]
  params: {
    topicName: armTopic.outputs.name
    name: eventSubscriptionName
    functionResourceId: '${functionAppId}/functions/${functionName}'
    deadLetterStorageAccountId: deadLetterStorageAccountId
    deadLetterContainerName: deadLetterContainerName
  }
}

module arnTopic 'eventgrid/topic.bicep' = if (enableResourceNotifications) {
  name: 'nspdrift-arn-topic'
  scope: resourceGroup(resourceNotificationsTopicResourceGroupName)
  dependsOn: [rg]
  params: {
    name: resourceNotificationsTopicName
    topicType: 'Microsoft.ResourceNotifications.Resources'
    useExisting: useExistingResourceNotificationsTopic
    tags: tags
  }
}

module arnDeadLetterAccess 'eventgrid/deadletter-rbac.bicep' = if (enableResourceNotifications) {
  name: 'nspdrift-arn-deadletter-${uniqueString(subscription().id)}'
  scope: resourceGroup(deadLetterAccountParts[2], deadLetterAccountParts[4])
  params: {
    storageAccountName: deadLetterAccountParts[8]
    containerName: deadLetterContainerName
    topicPrincipalId: arnTopic.outputs.principalId
  }
}

module arnSubscription 'eventgrid/arn-subscription.bicep' = if (enableResourceNotifications) {
  name: 'nspdrift-arn-subscription'
  scope: resourceGroup(resourceNotificationsTopicResourceGroupName)
  dependsOn: [arnDeadLetterAccess]
  params: {
    topicName: arnTopic.outputs.name
    name: eventSubscriptionName
    functionResourceId: '${functionAppId}/functions/${functionName}'
    deadLetterStorageAccountId: deadLetterStorageAccountId
    deadLetterContainerName: deadLetterContainerName
  }
}

output systemTopicId string = armTopic.outputs.id
output eventSubscriptionName string = eventSubscriptionName
