# azd postdeploy hook (Windows): one Event Grid system topic + subscription per monitored subscription.
$ErrorActionPreference = "Stop"
$subs = ($env:MONITORED_SUBSCRIPTION_IDS -split ",") | Where-Object { $_ }
foreach ($sub in $subs) {
  $rg = "rg-nspdrift-events"
  az group create --subscription $sub --name $rg --location $env:AZURE_LOCATION --output none
  az deployment group create --subscription $sub --resource-group $rg `
    --name "nspdrift-eventgrid" --template-file infra/eventgrid.bicep `
    --parameters functionAppId=$env:AZURE_FUNCTION_APP_ID deadLetterStorageId=$env:AZURE_STORAGE_ACCOUNT_ID `
    --output none
  Write-Host "Event Grid subscription ready for subscription $sub"
}
