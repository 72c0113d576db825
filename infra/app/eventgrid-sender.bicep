// EventGrid Data Sender for the function identity on one Event Grid custom topic
// (Microsoft.EventGrid/topics) or namespace (Microsoft.EventGrid/namespaces), and nothing else:
// what an `eventgrid` destination without key_setting needs to publish with the app's managed
// identity (a Microsoft Entra token for https://eventgrid.azure.net/.default). Deployed in the
// topic's resource group (main.bicep: eventGridTopicIds); the topic itself is not managed here.

@description('Object id of the function app\'s system-assigned identity.')
param functionPrincipalId string

@description('Resource id of the custom topic or namespace: /subscriptions/.../resourceGroups/.../providers/Microsoft.EventGrid/{topics|namespaces}/{name}.')
param topicId string

var parts = split(topicId, '/')
var kind = toLower(parts[7])
var topicName = last(parts)

resource customTopic 'Microsoft.EventGrid/topics@2025-02-15' existing = {
  name: topicName
}

resource namespace 'Microsoft.EventGrid/namespaces@2025-02-15' existing = {
  name: topicName
}

resource customTopicDataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'topics') {
  name: guid(customTopic.id, functionPrincipalId, 'd5a91429-5739-47e2-a06b-3470a27159e7')
  scope: customTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'd5a91429-5739-47e2-a06b-3470a27159e7')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'nsp-drift: publish alerts to this Event Grid topic'
  }
}

resource namespaceDataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (kind == 'namespaces') {
  name: guid(namespace.id, functionPrincipalId, 'd5a91429-5739-47e2-a06b-3470a27159e7')
  scope: namespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'd5a91429-5739-47e2-a06b-3470a27159e7')
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
    description: 'nsp-drift: publish alerts to this Event Grid namespace'
  }
}
