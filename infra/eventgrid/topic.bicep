// A subscription-level Event Grid system topic (location global) with a system-assigned identity,
// used to write dead letters; or, with useExisting, the subscription's existing topic of that type
// (Azure allows one per subscription and type).

@description('System topic name.')
param name string

@allowed(['Microsoft.Resources.Subscriptions', 'Microsoft.ResourceNotifications.Resources'])
param topicType string

@description('Use the existing topic of that name in this resource group instead of creating one.')
param useExisting bool = false

param tags object = {}

resource created 'Microsoft.EventGrid/systemTopics@2022-06-15' = if (!useExisting) {
  name: name
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: subscription().id
    topicType: topicType
  }
}

resource existingTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: name
}

output name string = name
output id string = useExisting ? existingTopic.id : created.id
@description('The topic identity that writes dead letters (an existing topic must have a system-assigned identity).')
output principalId string = useExisting ? existingTopic.identity.principalId : created.identity.principalId
