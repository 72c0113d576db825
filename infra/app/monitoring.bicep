// Log Analytics + workspace-based Application Insights. Local (instrumentation-key) auth is
// disabled: the app sends telemetry with its managed identity (Monitoring Metrics Publisher,
// APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD).

param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object = {}

@minValue(30)
@maxValue(730)
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

output applicationInsightsName string = appInsights.name
output applicationInsightsId string = appInsights.id
// Not a secret: with local auth disabled the instrumentation key alone cannot ingest anything.
output connectionString string = appInsights.properties.ConnectionString
output logAnalyticsId string = workspace.id
