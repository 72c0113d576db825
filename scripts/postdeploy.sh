#!/bin/sh
# azd postdeploy hook (azure.yaml): runs after `azd up` / `azd deploy` has deployed the code.
#
#   1. Waits until the app has indexed on_resource_event: an event subscription to a function that
#      does not exist yet fails with "Destination endpoint not found".
#   2. With NSPDRIFT_READER_MANAGEMENT_GROUP set, assigns Reader there (infra/app/reader-mg.bicep;
#      a subscription-scope deployment cannot target a management group).
#   3. For each monitored subscription, deploys infra/eventgrid.bicep: the system topic (or the
#      subscription's existing one), the event subscription to the function, and dead-letter
#      access for the topic's identity.
#   4. Warns about destination secrets the app settings reference but the vault does not hold.
#
# Uses the Azure CLI, signed in (az login) to the same tenant as azd. Idempotent: rerun it with
# `azd hooks run postdeploy`.
set -eu

log() { printf 'postdeploy: %s\n' "$*"; }
fail() {
  printf 'postdeploy: ERROR: %s\n' "$*" >&2
  exit 1
}

for name in AZURE_ENV_NAME AZURE_LOCATION AZURE_FUNCTION_APP_NAME AZURE_FUNCTION_APP_ID \
  AZURE_FUNCTION_PRINCIPAL_ID AZURE_STORAGE_ACCOUNT_ID NSPDRIFT_DEADLETTER_CONTAINER NSPDRIFT_MONITORED_SUBSCRIPTIONS; do
  eval "value=\${$name:-}"
  [ -n "$value" ] || fail "$name is not set: run 'azd provision' first (it is an output of infra/main.bicep)"
done
command -v az >/dev/null 2>&1 || fail "the Azure CLI (az) is required"
az account show --output none 2>/dev/null || fail "the Azure CLI is not signed in: run 'az login' (azd auth login does not sign in az)"

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
slug=$(printf '%s' "$AZURE_ENV_NAME" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9-' '-' | cut -c1-40)
notifications=$(printf '%s' "${NSPDRIFT_RESOURCE_NOTIFICATIONS:-false}" | tr 'A-Z' 'a-z')

# 1. the function must exist before Event Grid can target it
log "waiting for $AZURE_FUNCTION_APP_NAME to index on_resource_event"
attempt=0
until az rest --method get --only-show-errors --output none \
  --url "${AZURE_FUNCTION_APP_ID}/functions/on_resource_event?api-version=2024-04-01" 2>/dev/null; do
  attempt=$((attempt + 1))
  [ "$attempt" -lt 36 ] || fail "on_resource_event is not indexed after 6 minutes: see docs/deploy.md, '0 functions loaded'"
  sleep 10
done

# 2. Reader at a management group, if that is how Reader is granted
if [ -n "${NSPDRIFT_READER_MANAGEMENT_GROUP:-}" ]; then
  log "Reader for the app's identity on management group $NSPDRIFT_READER_MANAGEMENT_GROUP"
  az deployment mg create --management-group-id "$NSPDRIFT_READER_MANAGEMENT_GROUP" --location "$AZURE_LOCATION" \
    --name "nspdrift-reader-$slug" --template-file "$root/infra/app/reader-mg.bicep" \
    --parameters principalId="$AZURE_FUNCTION_PRINCIPAL_ID" --only-show-errors --output none
fi

# The subscription's system topic of a type, as "name<TAB>resource group<TAB>identity principal id".
# Azure allows one per subscription and type, so an existing one (ours or not) is reused.
find_topic() {
  az eventgrid system-topic list --subscription "$1" --only-show-errors \
    --query "[].[name, resourceGroup, topicType, identity.principalId]" --output tsv |
    awk -F '\t' -v type="$2" 'tolower($3) == type { print $1 "\t" $2 "\t" $4; exit }'
}

# Appends the eventgrid.bicep parameters that reuse an existing topic ($2: parameter prefix).
reuse_topic() {
  topic=$1
  [ -n "$topic" ] || return 0
  name=$(printf '%s' "$topic" | cut -f1)
  group=$(printf '%s' "$topic" | cut -f2)
  principal=$(printf '%s' "$topic" | cut -f3)
  if [ "$group" = rg-nspdrift-events ] && { [ "$name" = nspdrift-arm ] || [ "$name" = nspdrift-arn ]; }; then
    return 0 # ours: redeploying it is idempotent
  fi
  [ -n "$principal" ] || fail "system topic $name ($group, subscription $sub) has no system-assigned identity, which dead-lettering needs: enable it (portal: the topic > Identity) and rerun"
  log "reusing the existing system topic $name in $group"
  case $2 in
  arm) extra="$extra useExistingSystemTopic=true systemTopicName=$name systemTopicResourceGroupName=$group" ;;
  arn) extra="$extra useExistingResourceNotificationsTopic=true resourceNotificationsTopicName=$name resourceNotificationsTopicResourceGroupName=$group" ;;
  esac
}

# 3. Event Grid in every monitored subscription
for sub in $(printf '%s' "$NSPDRIFT_MONITORED_SUBSCRIPTIONS" | tr ',' ' '); do
  log "subscription $sub: Event Grid system topic and subscription to on_resource_event"
  az provider register --namespace Microsoft.EventGrid --subscription "$sub" --wait --only-show-errors --output none
  extra=""
  reuse_topic "$(find_topic "$sub" microsoft.resources.subscriptions)" arm
  if [ "$notifications" = true ]; then
    reuse_topic "$(find_topic "$sub" microsoft.resourcenotifications.resources)" arn
  fi
  # shellcheck disable=SC2086 # $extra is a list of key=value words without spaces
  az deployment sub create --subscription "$sub" --location "$AZURE_LOCATION" --name "nspdrift-eventgrid-$slug" \
    --template-file "$root/infra/eventgrid.bicep" --only-show-errors --output none \
    --parameters functionAppId="$AZURE_FUNCTION_APP_ID" deadLetterStorageAccountId="$AZURE_STORAGE_ACCOUNT_ID" \
    deadLetterContainerName="$NSPDRIFT_DEADLETTER_CONTAINER" eventSubscriptionName="nsp-drift-$slug" \
    location="$AZURE_LOCATION" enableResourceNotifications="$notifications" $extra
done

# 4. destination secrets the app settings reference
if [ -n "${NSPDRIFT_KEY_VAULT_SECRETS:-}" ] && [ -n "${AZURE_KEY_VAULT_NAME:-}" ]; then
  if present=$(az keyvault secret list --vault-name "$AZURE_KEY_VAULT_NAME" --query "[].name" --output tsv --only-show-errors 2>/dev/null); then
    for secret in $(printf '%s' "$NSPDRIFT_KEY_VAULT_SECRETS" | tr ',' ' '); do
      printf '%s\n' "$present" | grep -qix "$secret" ||
        log "WARNING: secret $secret is not in $AZURE_KEY_VAULT_NAME: az keyvault secret set --vault-name $AZURE_KEY_VAULT_NAME --name $secret --file <file with the value>"
    done
  else
    log "WARNING: cannot list the secrets of $AZURE_KEY_VAULT_NAME (role assignments can take minutes): check $NSPDRIFT_KEY_VAULT_SECRETS exist"
  fi
fi
log "done: Event Grid delivers to $AZURE_FUNCTION_APP_NAME/on_resource_event in $NSPDRIFT_MONITORED_SUBSCRIPTIONS"
