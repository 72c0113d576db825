// App settings of the function app: every setting the code reads in Azure (shared/entrypoints/settings.py
// DOCUMENTED; tests/test_infra.py checks both ways), identity-based host storage, Entra-authenticated
// telemetry, and one Key Vault reference for each app setting a destination names in url_setting,
// secret_setting, token_setting, endpoint_setting or key_setting. No value here is a secret.
//
// Deliberately absent: NSP_DRIFT_ESTATE (offline estate file: local runs and demos only),
// AZURE_CLIENT_ID (only for a user-assigned identity; this app uses its system-assigned one),
// FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION / WEBSITE_RUN_FROM_PACKAGE and the other
// settings Flex Consumption deprecates (the runtime is in functionAppConfig.runtime).
//
// This resource replaces the whole app-settings collection on every provision: change settings
// through the azd environment / parameters, not in the portal.

param functionAppName string

@description('The app\'s own storage account (AzureWebJobsStorage, identity-based).')
param storageAccountName string

param applicationInsightsConnectionString string

@description('Vault URI with its trailing slash, e.g. https://kv-x.vault.azure.net/')
param keyVaultUri string

@description('NSP_DRIFT_SUBSCRIPTIONS: subscription ids in scope.')
param monitoredSubscriptionIds array

@description('NSP_DRIFT_COALESCE_SECONDS (0-600).')
@minValue(0)
@maxValue(600)
param coalesceSeconds int = 30

@description('NSP_DRIFT_DISPATCH_BUDGET_SECONDS (10-240): time budget of one delivery run.')
@minValue(10)
@maxValue(240)
param dispatchBudgetSeconds int = 120

@description('NSP_DRIFT_INVOCATION_BUDGET_SECONDS (10-480): time budget of one evaluation or sweep invocation; the rest is re-queued.')
@minValue(10)
@maxValue(480)
param invocationBudgetSeconds int = 120

@description('NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS (1-31): the full sweep verifies every account\'s perimeter membership within this many full sweeps.')
@minValue(1)
@maxValue(31)
param membershipVerifySweeps int = 11

@description('NSP_DRIFT_STATE_TABLE_PREFIX: letters and digits, starting with a letter.')
param stateTablePrefix string = 'nspdrift'

@description('NSP_DRIFT_SWEEP_SCHEDULE: NCRONTAB (six fields) of the frequent Resource Graph sweep (reconcile_sweep).')
param sweepSchedule string = '0 */15 * * * *'

@description('NSP_DRIFT_FULL_SWEEP_SCHEDULE: NCRONTAB (six fields) of the full ARM sweep (reconcile_full_sweep).')
param fullSweepSchedule string = '0 30 2 * * *'

@description('NSP_DRIFT_RULES_CONFIG as inline JSON (an object); empty object = defaults.')
param rulesConfig object = {}

@description('NSP_DRIFT_DISABLED_RULES: comma-separated rule ids.')
param disabledRules string = ''

@description('NSP_DRIFT_SEVERITY_OVERRIDES: comma-separated rule=severity pairs.')
param severityOverrides string = ''

@description('NSP_DRIFT_DESTINATIONS: the destination configs (no secrets, only the names of the settings that hold them).')
param destinations array = []

@description('More app settings to wire as Key Vault references (beyond those the destinations name).')
param extraSecretSettings array = []

// The keys of a destination whose value names an app setting (shared/adapters/notify/destinations.py SETTING_KEYS).
var secretSettingKeys = ['url_setting', 'secret_setting', 'token_setting', 'endpoint_setting', 'key_setting']

// Every (key, value) of every destination; the values of the *_setting keys are setting names.
var destinationFields = flatten(map(destinations, d => items(d)))

var namedSecretSettings = map(filter(destinationFields, f => contains(secretSettingKeys, f.key)), f => string(f.value))

var secretSettings = union(namedSecretSettings, extraSecretSettings)

// App setting NSP_DRIFT_TEAMS_URL -> vault secret NSP-DRIFT-TEAMS-URL (secret names allow no '_').
// Versionless: a new secret version is picked up within 24 h, or at once on any app-settings change.
var secretReferences = toObject(secretSettings, s => s, s => '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/${replace(s, '_', '-')}/)')

var baseSettings = {
  // Functions host storage, the queue trigger/output and the state tables: managed identity, no keys.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__blobServiceUri: 'https://${storageAccountName}.blob.${environment().suffixes.storage}'
  AzureWebJobsStorage__queueServiceUri: 'https://${storageAccountName}.queue.${environment().suffixes.storage}'
  AzureWebJobsStorage__tableServiceUri: 'https://${storageAccountName}.table.${environment().suffixes.storage}'
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  // Python <= 3.12: use the app's pinned azure-functions (CloudEvent support), not the worker's copy
  // (3.13 and later isolate the app's dependencies by default; the setting is then redundant).
  PYTHON_ISOLATE_WORKER_DEPENDENCIES: '1'
  NSP_DRIFT_SUBSCRIPTIONS: join(monitoredSubscriptionIds, ',')
  NSP_DRIFT_COALESCE_SECONDS: string(coalesceSeconds)
  NSP_DRIFT_DISPATCH_BUDGET_SECONDS: string(dispatchBudgetSeconds)
  NSP_DRIFT_INVOCATION_BUDGET_SECONDS: string(invocationBudgetSeconds)
  NSP_DRIFT_MEMBERSHIP_VERIFY_SWEEPS: string(membershipVerifySweeps)
  NSP_DRIFT_STATE_TABLE_PREFIX: stateTablePrefix
  NSP_DRIFT_SWEEP_SCHEDULE: sweepSchedule
  NSP_DRIFT_FULL_SWEEP_SCHEDULE: fullSweepSchedule
  NSP_DRIFT_RULES_CONFIG: empty(rulesConfig) ? '' : string(rulesConfig)
  NSP_DRIFT_DISABLED_RULES: disabledRules
  NSP_DRIFT_SEVERITY_OVERRIDES: severityOverrides
  NSP_DRIFT_DESTINATIONS: empty(destinations) ? '' : string(destinations)
  // The app reads the cloud it is deployed in (AzureCloud, AzureChinaCloud, AzureUSGovernment):
  // its ARM endpoint, token scope and authority follow from the name (shared/adapters/cloud.py).
  NSP_DRIFT_CLOUD: environment().name
  // Only for a custom ARM endpoint in NSP_DRIFT_CLOUD (local runs, a private ARM); empty here.
  NSP_DRIFT_AUTHORITY_HOST: ''
}

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  // The fixed settings win over a destination that (wrongly) names one of them.
  properties: union(secretReferences, baseSettings)
}

@description('Vault secret names the app settings reference; each must exist (docs/deploy.md).')
output secretNames array = map(secretSettings, s => replace(s, '_', '-'))
