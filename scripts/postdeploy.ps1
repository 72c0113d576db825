# azd postdeploy hook (azure.yaml), Windows/PowerShell twin of scripts/postdeploy.sh: runs after
# `azd up` / `azd deploy` has deployed the code.
#
#   1. Waits until the app has indexed on_resource_event: an event subscription to a function that
#      does not exist yet fails with "Destination endpoint not found".
#   2. With NSPDRIFT_READER_MANAGEMENT_GROUP set, assigns Reader there (infra/app/reader-mg.bicep).
#   3. For each monitored subscription, deploys infra/eventgrid.bicep (system topic or the existing
#      one, event subscription to the function, dead-letter access for the topic's identity).
#   4. Warns about destination secrets the app settings reference but the vault does not hold.
#
# Uses the Azure CLI, signed in (az login) to the same tenant as azd. Idempotent: rerun it with
# `azd hooks run postdeploy`.
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

function Log([string]$Message) { Write-Host "postdeploy: $Message" }
function Fail([string]$Message) { Write-Error "postdeploy: ERROR: $Message"; exit 1 }
function Invoke-Az {
    & az @args
    if ($LASTEXITCODE -ne 0) { Fail "az $($args -join ' ') failed (exit $LASTEXITCODE)" }
}

foreach ($name in 'AZURE_ENV_NAME', 'AZURE_LOCATION', 'AZURE_FUNCTION_APP_NAME', 'AZURE_FUNCTION_APP_ID',
    'AZURE_FUNCTION_PRINCIPAL_ID', 'AZURE_STORAGE_ACCOUNT_ID', 'NSPDRIFT_DEADLETTER_CONTAINER', 'NSPDRIFT_MONITORED_SUBSCRIPTIONS') {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        Fail "$name is not set: run 'azd provision' first (it is an output of infra/main.bicep)"
    }
}
if (-not (Get-Command az -ErrorAction SilentlyContinue)) { Fail 'the Azure CLI (az) is required' }
az account show --output none 2>$null
if ($LASTEXITCODE -ne 0) { Fail "the Azure CLI is not signed in: run 'az login' (azd auth login does not sign in az)" }

$root = Split-Path -Parent $PSScriptRoot
$slug = ($env:AZURE_ENV_NAME.ToLowerInvariant() -replace '[^a-z0-9-]', '-')
if ($slug.Length -gt 40) { $slug = $slug.Substring(0, 40) }
$notifications = "$env:NSPDRIFT_RESOURCE_NOTIFICATIONS".ToLowerInvariant() -eq 'true'

# 1. the function must exist before Event Grid can target it
Log "waiting for $env:AZURE_FUNCTION_APP_NAME to index on_resource_event"
$url = "$($env:AZURE_FUNCTION_APP_ID)/functions/on_resource_event?api-version=2024-04-01"
for ($attempt = 1; ; $attempt++) {
    az rest --method get --url $url --only-show-errors --output none 2>$null
    if ($LASTEXITCODE -eq 0) { break }
    if ($attempt -ge 36) { Fail "on_resource_event is not indexed after 6 minutes: see docs/deploy.md, '0 functions loaded'" }
    Start-Sleep -Seconds 10
}

# 2. Reader at a management group, if that is how Reader is granted
if ($env:NSPDRIFT_READER_MANAGEMENT_GROUP) {
    Log "Reader for the app's identity on management group $env:NSPDRIFT_READER_MANAGEMENT_GROUP"
    Invoke-Az deployment mg create --management-group-id $env:NSPDRIFT_READER_MANAGEMENT_GROUP --location $env:AZURE_LOCATION `
        --name "nspdrift-reader-$slug" --template-file (Join-Path $root 'infra/app/reader-mg.bicep') `
        --parameters "principalId=$env:AZURE_FUNCTION_PRINCIPAL_ID" --only-show-errors --output none
}

# The subscription's system topic of a type (Azure allows one per subscription and type), or $null.
function Find-Topic([string]$Subscription, [string]$Type) {
    $json = az eventgrid system-topic list --subscription $Subscription --only-show-errors `
        --query '[].{name: name, group: resourceGroup, type: topicType, principal: identity.principalId}' --output json
    if ($LASTEXITCODE -ne 0) { return $null }
    return @($json | ConvertFrom-Json) | Where-Object { $_.type -and $_.type.ToLowerInvariant() -eq $Type } | Select-Object -First 1
}

# eventgrid.bicep parameters that reuse an existing topic (none when it is ours or there is none).
function Get-ReuseParameters($Topic, [string]$Kind, [string]$Subscription) {
    if (-not $Topic) { return @() }
    if ($Topic.group -eq 'rg-nspdrift-events' -and $Topic.name -in 'nspdrift-arm', 'nspdrift-arn') { return @() }
    if (-not $Topic.principal) {
        Fail "system topic $($Topic.name) ($($Topic.group), subscription $Subscription) has no system-assigned identity, which dead-lettering needs: enable it (portal: the topic > Identity) and rerun"
    }
    Log "reusing the existing system topic $($Topic.name) in $($Topic.group)"
    if ($Kind -eq 'arm') {
        return @('useExistingSystemTopic=true', "systemTopicName=$($Topic.name)", "systemTopicResourceGroupName=$($Topic.group)")
    }
    return @('useExistingResourceNotificationsTopic=true', "resourceNotificationsTopicName=$($Topic.name)",
        "resourceNotificationsTopicResourceGroupName=$($Topic.group)")
}

# 3. Event Grid in every monitored subscription
foreach ($sub in ($env:NSPDRIFT_MONITORED_SUBSCRIPTIONS -split ',' | Where-Object { $_.Trim() })) {
    $sub = $sub.Trim()
    Log "subscription ${sub}: Event Grid system topic and subscription to on_resource_event"
    Invoke-Az provider register --namespace Microsoft.EventGrid --subscription $sub --wait --only-show-errors --output none
    $parameters = @(
        "functionAppId=$env:AZURE_FUNCTION_APP_ID", "deadLetterStorageAccountId=$env:AZURE_STORAGE_ACCOUNT_ID",
        "deadLetterContainerName=$env:NSPDRIFT_DEADLETTER_CONTAINER", "eventSubscriptionName=nsp-drift-$slug",
        "location=$env:AZURE_LOCATION", "enableResourceNotifications=$($notifications.ToString().ToLowerInvariant())"
    )
    $parameters += @(Get-ReuseParameters (Find-Topic $sub 'microsoft.resources.subscriptions') 'arm' $sub)
    if ($notifications) {
        $parameters += @(Get-ReuseParameters (Find-Topic $sub 'microsoft.resourcenotifications.resources') 'arn' $sub)
    }
    Invoke-Az deployment sub create --subscription $sub --location $env:AZURE_LOCATION --name "nspdrift-eventgrid-$slug" `
        --template-file (Join-Path $root 'infra/eventgrid.bicep') --only-show-errors --output none --parameters @parameters
}

# 4. destination secrets the app settings reference
if ($env:NSPDRIFT_KEY_VAULT_SECRETS -and $env:AZURE_KEY_VAULT_NAME) {
    $present = az keyvault secret list --vault-name $env:AZURE_KEY_VAULT_NAME --query '[].name' --output tsv --only-show-errors 2>$null
    if ($LASTEXITCODE -ne 0) {
        Log "WARNING: cannot list the secrets of $env:AZURE_KEY_VAULT_NAME (role assignments can take minutes): check $env:NSPDRIFT_KEY_VAULT_SECRETS exist"
    }
    else {
        foreach ($secret in ($env:NSPDRIFT_KEY_VAULT_SECRETS -split ',' | Where-Object { $_ })) {
            if (-not (@($present) | Where-Object { $_ -ieq $secret })) {
                Log "WARNING: secret $secret is not in $($env:AZURE_KEY_VAULT_NAME): az keyvault secret set --vault-name $($env:AZURE_KEY_VAULT_NAME) --name $secret --file <file with the value>"
            }
        }
    }
}
Log "done: Event Grid delivers to $env:AZURE_FUNCTION_APP_NAME/on_resource_event in $env:NSPDRIFT_MONITORED_SUBSCRIPTIONS"
