// Key Vault (RBAC mode) for destination secrets: Teams Workflows URLs, webhook URLs and signing
// secrets, Azure DevOps and GitHub tokens. Bicep never writes a secret value: operators store them
// (docs/deploy.md) and the app settings hold only @Microsoft.KeyVault(SecretUri=...) references.

@description('Vault name: 3-24 letters, digits and hyphens.')
@minLength(3)
@maxLength(24)
param name string

param location string
param tags object = {}

@description('Purge protection cannot be turned off again; a purged-protected vault blocks reusing its name for the retention period after azd down.')
param enablePurgeProtection bool = true

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: enablePurgeProtection ? true : null
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled' // Flex Consumption without VNet integration resolves references publicly
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
