#!/bin/sh
# azd postdeploy hook: one Event Grid system topic + subscription per monitored subscription.
set -eu
subs=$(printf '%s' "${MONITORED_SUBSCRIPTION_IDS:-}" | tr ',' ' ')
[ -n "$subs" ] || { echo "MONITORED_SUBSCRIPTION_IDS is empty: nothing to subscribe"; exit 0; }
for sub in $subs; do
  rg="rg-nspdrift-events"
  az group create --subscription "$sub" --name "$rg" --location "${AZURE_LOCATION}" --output none
  az deployment group create --subscription "$sub" --resource-group "$rg" \
    --name "nspdrift-eventgrid" --template-file infra/eventgrid.bicep \
    --parameters functionAppId="${AZURE_FUNCTION_APP_ID}" deadLetterStorageId="${AZURE_STORAGE_ACCOUNT_ID}" \
    --output none
  echo "Event Grid subscription ready for subscription $sub"
done
