// nsp-drift: the function app and everything it needs, in one resource group of the deployment
// subscription, plus Reader for its identity on every monitored subscription.
//
//   azd provision  -> this template (subscription scope)
//   azd deploy     -> the code, then the postdeploy hook (scripts/postdeploy.*) deploys
//                     infra/eventgrid.bicep into each monitored subscription. Event Grid must come
//                     after the code: an event subscription to a function that is not indexed yet
//                     fails with "Destination endpoint not found".
//
// docs/deploy.md explains every parameter, role and step; tests/test_infra.py checks this
// template against the code (app settings, queue and table names, role GUIDs, no secrets).

targetScope = 'subscription'

// -- azd ------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment (AZURE_ENV_NAME): part of the resource group name and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region of the app and its resources (AZURE_LOCATION); it must offer Flex Consumption: az functionapp list-flexconsumption-locations.')
param location string

@description('Object id of whoever runs azd (AZURE_PRINCIPAL_ID). It gets Key Vault Secrets Officer on the app\'s own vault only, to store destination secrets. Empty: no assignment.')
param principalId string = ''

@allowed(['User', 'ServicePrincipal', 'Group'])
@description('Type of principalId (a pipeline identity is a ServicePrincipal).')
param principalType string = 'User'

@description('Resource group of the app; default rg-<environmentName>.')
param resourceGroupName string = ''

// -- what is monitored ----------------------------------------------------------------------------

@description('Subscription ids to monitor (NSP_DRIFT_SUBSCRIPTIONS, Reader, Event Grid). Empty: the deployment subscription.')
param monitoredSubscriptionIds array = []

@description('Optional management group id: Reader is assigned there (scripts/postdeploy.* with app/reader-mg.bicep) instead of on each monitored subscription.')
param readerManagementGroupId string = ''

// -- the function app -----------------------------------------------------------------------------

@description('Python version of the function app (README: supported versions).')
@allowed(['3.11', '3.12', '3.13'])
param pythonVersion string = '3.11'

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Flex Consumption maximum instance count. Low on purpose: all instances share one identity\'s ARM read throttle.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

// -- app settings (shared/entrypoints/settings.py DOCUMENTED) ---------------------------------------------------

@description('NSP_DRIFT_COALESCE_SECONDS: coalescing window per target (0-600).')
@minValue(0)
@maxValue(600)
param coalesceSeconds int = 30

@description('NSP_DRIFT_DISPATCH_BUDGET_SECONDS: time budget of one delivery run (10-240); the rest waits for the next run.')
@minValue(10)
@maxValue(240)
param dispatchBudgetSeconds int = 120

@description('NSP_DRIFT_INVOCATION_BUDGET_SECONDS: time budget of one evaluation or sweep invocation (10-480, well under functionTimeout); unfinished work is re-queued.')
@minValue(10)
@maxValue(480)
param invocationBudgetSeconds int = 120

@description('NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS: the full sweep verifies every account\'s perimeter membership (its NSP configuration) within this many full sweeps (1-31; 1 = every account every sweep).')
@minValue(1)
@maxValue(31)
param membershipVerifySweeps int = 11

@description('NSP_DRIFT_STATE_TABLE_PREFIX: prefix of the state tables (letters and digits, starting with a letter).')
@minLength(1)
@maxLength(41)
param stateTablePrefix string = 'nspdrift'

@description('NSP_DRIFT_SWEEP_SCHEDULE: NCRONTAB (six fields) of the frequent Resource Graph sweep (changed summaries, VMs with VHDs and blob backups, delivery retries, digests).')
param sweepSchedule string = '0 */15 * * * *'

@description('NSP_DRIFT_FULL_SWEEP_SCHEDULE: NCRONTAB (six fields) of the full ARM sweep that re-reads every account.')
param fullSweepSchedule string = '0 30 2 * * *'

@description('NSP_DRIFT_RULES_CONFIG as an inline JSON object (rule options and overrides); {} = defaults.')
param rulesConfig object = {}

@description('NSP_DRIFT_DISABLED_RULES: comma-separated rule ids.')
param disabledRules string = ''

@description('NSP_DRIFT_SEVERITY_OVERRIDES: comma-separated rule=severity pairs.')
param severityOverrides string = ''

@description('NSP_DRIFT_DESTINATIONS: destination configs WITHOUT secrets; their url_setting / secret_setting / token_setting / endpoint_setting / key_setting name app settings that become Key Vault references.')
param destinations array = []

@description('Event Grid custom topics (Microsoft.EventGrid/topics) or namespaces (Microsoft.EventGrid/namespaces), by resource id, that eventgrid destinations without key_setting publish to with the app\'s managed identity: each gets EventGrid Data Sender for it. Empty: none (key-based destinations need no role).')
param eventGridTopicIds array = []

@description('Extra app settings to wire as Key Vault references (beyond those the destinations name).')
param extraSecretSettings array = []

@description('Key Vault purge protection (cannot be turned off later; set false for throw-away environments).')
param keyVaultPurgeProtection bool = true

// -- names ----------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'nsp-drift'
}
var monitored = empty(monitoredSubscriptionIds) ? [subscription().subscriptionId] : map(monitoredSubscriptionIds, id => toLower(trim(string(id))))

var functionAppName = 'func-nspdrift-${resourceToken}'
var planName = 'plan-nspdrift-${resourceToken}'
var storageAccountName = 'stnspdrift${take(resourceToken, 12)}'
var keyVaultName = 'kv-nspdrift-${take(resourceToken, 10)}'
var logAnalyticsName = 'log-nspdrift-${resourceToken}'
var applicationInsightsName = 'appi-nspdrift-${resourceToken}'
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'eventgrid-deadletter'

// shared/core/work.py QUEUE_NAME (the queue trigger binds to it by name) and the host's poison queue.
var queueName = 'nsp-drift-evaluations'
var queueNames = [queueName, '${queueName}-poison']

// shared/adapters/state/table_store.py: {prefix}state, {prefix}index, {prefix}pending, {prefix}events, {prefix}outbox.
var tableSuffixes = ['state', 'index', 'pending', 'events', 'outbox']
var tableNames = map(tableSuffixes, suffix => '${stateTablePrefix}${suffix}')

// -- resources ------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module monitoring 'app/monitoring.bicep' = {
  name: 'nspdrift-monitoring'
  scope: rg
  params: {
    logAnalyticsName: logAnalyticsName
    applicationInsightsName: applicationInsightsName
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'nspdrift-storage'
  scope: rg
  params: {
    name: storageAccountName
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
    queueNames: queueNames
    tableNames: tableNames
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'nspdrift-keyvault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
    enablePurgeProtection: keyVaultPurgeProtection
  }
}

module api 'app/api.bicep' = {
  name: 'nspdrift-api'
  scope: rg
  params: {
    name: functionAppName
    planName: planName
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'nspdrift-rbac'
  scope: rg
  params: {
    functionPrincipalId: api.outputs.principalId
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

// After the role assignments: the host then starts with working identity-based storage, and the
// Key Vault references resolve on first read.
module appSettings 'app/appsettings.bicep' = {
  name: 'nspdrift-appsettings'
  scope: rg
  dependsOn: [rbac]
  params: {
    functionAppName: api.outputs.name
    storageAccountName: storage.outputs.name
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: keyVault.outputs.uri
    monitoredSubscriptionIds: monitored
    coalesceSeconds: coalesceSeconds
    dispatchBudgetSeconds: dispatchBudgetSeconds
    invocationBudgetSeconds: invocationBudgetSeconds
    membershipVerifySweeps: membershipVerifySweeps
    stateTablePrefix: stateTablePrefix
    sweepSchedule: sweepSchedule
    fullSweepSchedule: fullSweepSchedule
    rulesConfig: rulesConfig
    disabledRules: disabledRules
    severityOverrides: severityOverrides
    destinations: destinations
    extraSecretSettings: extraSecretSettings
  }
}

// EventGrid Data Sender on each Event Grid topic/namespace an identity-based eventgrid destination
// publishes to, in the topic's own subscription and resource group.
module eventGridSender 'app/eventgrid-sender.bicep' = [
  for topicId in eventGridTopicIds: {
    name: 'nspdrift-egsender-${uniqueString(string(topicId), environmentName)}'
    scope: resourceGroup(split(string(topicId), '/')[2], split(string(topicId), '/')[4])
    params: {
      functionPrincipalId: api.outputs.principalId
      topicId: string(topicId)
    }
  }
]

// Reader on each monitored subscription (none when a management group gets it instead).
var readerSubscriptions = empty(readerManagementGroupId) ? monitored : []

module reader 'app/reader.bicep' = [
  for subscriptionId in readerSubscriptions: {
    name: 'nspdrift-reader-${uniqueString(subscriptionId, environmentName)}'
    scope: subscription(subscriptionId)
    params: {
      principalId: api.outputs.principalId
    }
  }
]

// -- outputs (azd stores them in the environment; the postdeploy hook reads them) -----------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_ID string = api.outputs.id
output AZURE_FUNCTION_PRINCIPAL_ID string = api.outputs.principalId
output AZURE_FUNCTION_URL string = 'https://${api.outputs.defaultHostName}'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_ACCOUNT_ID string = storage.outputs.id
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
output NSPDRIFT_DEADLETTER_CONTAINER string = deadLetterContainerName
output NSPDRIFT_MONITORED_SUBSCRIPTIONS string = join(monitored, ',')
output NSPDRIFT_READER_MANAGEMENT_GROUP string = readerManagementGroupId
output NSPDRIFT_KEY_VAULT_SECRETS string = join(appSettings.outputs.secretNames, ',')
