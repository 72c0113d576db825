// nsp-drift: Flex Consumption function app, its own storage, monitoring, a Key Vault for
// destination secrets, and Reader on every monitored subscription (or a management group).
// The Event Grid subscriptions are deployed by infra/hooks/postdeploy.sh (infra/eventgrid.bicep)
// after the code: an AzureFunction endpoint must exist before a subscription can target it.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; used to name resources')
param environmentName string

@description('Region of the app and its resources')
param location string

@description('Subscriptions nsp-drift watches (Reader is granted on each)')
param monitoredSubscriptionIds array = [subscription().subscriptionId]

@description('Optional management group to grant Reader on instead of (or besides) subscriptions')
param monitoredManagementGroupId string = ''

@description('Object id of the deploying user, granted data access to the app storage for debugging (optional)')
param principalId string = ''

@description('Coalescing window in seconds')
param coalesceSeconds int = 30

@description('NCRONTAB schedule of the Resource Graph sweep')
param sweepSchedule string = '0 */15 * * * *'

@description('NCRONTAB schedule of the full ARM sweep')
param fullSweepSchedule string = '0 30 2 * * *'

@description('Rules configuration (inline JSON), optional')
param rulesConfig string = ''

@description('Comma-separated rule ids to disable')
param disabledRules string = ''

@description('Comma-separated rule=severity overrides')
param severityOverrides string = ''

@description('Destinations JSON (no secrets: names of the app settings holding them)')
param destinations string = '[]'

@description('Destination secret app settings to create as Key Vault references: [{ setting: "NSP_DRIFT_TEAMS_URL", secretName: "teams-url" }]')
param destinationSecrets array = []

var token = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-nspdrift-${environmentName}'
  location: location
  tags: tags
}

module app 'app/app.bicep' = {
  scope: rg
  name: 'nspdrift-app'
  params: {
    location: location
    tags: tags
    token: token
    principalId: principalId
    subscriptionsSetting: join(monitoredSubscriptionIds, ',')
    coalesceSeconds: coalesceSeconds
    sweepSchedule: sweepSchedule
    fullSweepSchedule: fullSweepSchedule
    rulesConfig: rulesConfig
    disabledRules: disabledRules
    severityOverrides: severityOverrides
    destinations: destinations
    destinationSecrets: destinationSecrets
  }
}

// Least privilege on what is watched: Reader (every read nsp-drift makes is a GET, or a Resource
// Graph query, which Reader covers). No write, no POST action, no listKeys.
module readers 'app/reader.bicep' = [for sub in monitoredSubscriptionIds: {
  scope: subscription(sub)
  name: 'nspdrift-reader-${uniqueString(sub)}'
  params: {
    principalId: app.outputs.principalId
  }
}]

module mgReader 'app/reader-mg.bicep' = if (!empty(monitoredManagementGroupId)) {
  scope: managementGroup(monitoredManagementGroupId)
  name: 'nspdrift-reader-mg'
  params: {
    principalId: app.outputs.principalId
  }
}

output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output AZURE_FUNCTION_APP_ID string = app.outputs.functionAppId
output AZURE_STORAGE_ACCOUNT_ID string = app.outputs.storageAccountId
output AZURE_KEY_VAULT_NAME string = app.outputs.keyVaultName
output MONITORED_SUBSCRIPTION_IDS string = join(monitoredSubscriptionIds, ',')
