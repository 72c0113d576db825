// The function app and what only it uses: storage (identity-based, no keys), Log Analytics and
// Application Insights (Entra-authenticated), a Key Vault (RBAC) for destination secrets.
param location string
param tags object
param token string
param principalId string
param subscriptionsSetting string
param coalesceSeconds int
param sweepSchedule string
param fullSweepSchedule string
param rulesConfig string
param disabledRules string
param severityOverrides string
param destinations string
param destinationSecrets array

var deploymentContainer = 'app-package'
var deadLetterContainer = 'eventgrid-deadletter'
var roles = {
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  metricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stnspdrift${take(token, 12)}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
  }
  resource blobs 'blobServices' = {
    name: 'default'
    resource package 'containers' = { name: deploymentContainer }
    resource deadLetters 'containers' = { name: deadLetterContainer }
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-nspdrift-${token}'
  location: location
  tags: tags
  properties: { retentionInDays: 30, sku: { name: 'PerGB2018' } }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-nspdrift-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-nspdrift-${take(token, 10)}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-nspdrift-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

// Secrets of destinations are app settings that reference Key Vault: never plain values here.
var secretSettings = toObject(destinationSecrets, s => s.setting, s => '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${s.secretName}/)')

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-nspdrift-${token}'
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: 'SystemAssigned'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: 40, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: concat([
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__blobServiceUri', value: storage.properties.primaryEndpoints.blob }
        { name: 'AzureWebJobsStorage__queueServiceUri', value: storage.properties.primaryEndpoints.queue }
        { name: 'AzureWebJobsStorage__tableServiceUri', value: storage.properties.primaryEndpoints.table }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
        { name: 'NSP_DRIFT_SUBSCRIPTIONS', value: subscriptionsSetting }
        { name: 'NSP_DRIFT_COALESCE_SECONDS', value: string(coalesceSeconds) }
        { name: 'NSP_DRIFT_STATE_TABLE_PREFIX', value: 'nspdrift' }
        { name: 'NSP_DRIFT_SWEEP_SCHEDULE', value: sweepSchedule }
        { name: 'NSP_DRIFT_FULL_SWEEP_SCHEDULE', value: fullSweepSchedule }
        { name: 'NSP_DRIFT_RULES_CONFIG', value: rulesConfig }
        { name: 'NSP_DRIFT_DISABLED_RULES', value: disabledRules }
        { name: 'NSP_DRIFT_SEVERITY_OVERRIDES', value: severityOverrides }
        { name: 'NSP_DRIFT_DESTINATIONS', value: destinations }
      ], map(items(secretSettings), s => { name: s.key, value: s.value }))
    }
  }
}

// Data roles only on the app's own storage account (host leases, queue, state tables).
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, site.id, roles.blobDataOwner)
  properties: {
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataOwner)
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, site.id, roles.queueDataContributor)
  properties: {
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataContributor)
  }
}

resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, site.id, roles.tableDataContributor)
  properties: {
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}

resource metrics 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: insights
  name: guid(insights.id, site.id, roles.metricsPublisher)
  properties: {
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.metricsPublisher)
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, site.id, roles.keyVaultSecretsUser)
  properties: {
    principalId: site.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

// The developer may read the state tables and queue while debugging (optional).
resource devTables 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  scope: storage
  name: guid(storage.id, principalId, roles.tableDataContributor)
  properties: {
    principalId: principalId
    principalType: 'User'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}

output principalId string = site.identity.principalId
output functionAppName string = site.name
output functionAppId string = site.id
output storageAccountId string = storage.id
output keyVaultName string = vault.name
