// Tenantflow on Azure: a Flex Consumption function app (Python 3.12) running as a user-assigned identity, its
// storage account (deployment package, flow-runs queue, tables), a PostgreSQL flexible server the app signs in to
// with Entra (no app password), Key Vault for the app's secrets, and Application Insights.
// Every TENANTFLOW_* setting the app reads (shared/settings.py SETTING_NAMES) is set below, except the owner's
// migration DSN (DEPLOY_SETTING_NAMES): the app never migrates and never holds it; postprovision migrates.
// `azd up` runs infra/hooks: preprovision makes the secrets once, postprovision migrates and adds the app's login.
targetScope = 'resourceGroup'

@minLength(1)
@maxLength(40)
@description('azd environment name; resource names are unique per environment')
param environmentName string
param location string = resourceGroup().location

@description('who runs azd (AZURE_PRINCIPAL_ID): PostgreSQL Entra administrator and Key Vault secrets officer')
param principalId string = ''
@description('that principal\'s name as Entra shows it (user principal name, or the service principal\'s name)')
param principalName string = ''
@allowed(['User', 'ServicePrincipal'])
param principalType string = 'User'
@description('public IP of the machine running azd, admitted by the PostgreSQL firewall for the postprovision hook')
param clientIpAddress string = ''

@secure()
@description('32 random bytes, base64 (TENANTFLOW_ENCRYPTION_KEY); made once by the preprovision hook')
param encryptionKey string
@secure()
@description('TENANTFLOW_OPERATOR_KEY; made once by the preprovision hook')
param operatorKey string
@secure()
@description('password of tenantflow_owner (owns the schema, runs migrations); made once by the preprovision hook')
param postgresOwnerPassword string

@description('Store backend: postgres (default here) or table')
@allowed(['postgres', 'table'])
param store string = 'postgres'
@description('endpoint of the shipped `default` static connection (an Azure OpenAI / Foundry resource); empty: flows use the tenants\' own connections')
param defaultEndpoint string = ''
@description('Key Vault purge protection: on for production (a deleted vault then blocks its name for 90 days), off for dev')
param purgeProtection bool = false

// Connection budget (tests/deploy/test_connection_budget.py checks it): every instance holds at most
// postgresPoolSize connections, so postgresPoolSize × maximumInstanceCount + postgresReservedConnections +
// connectionHeadroom ≤ postgresMaxConnections. Burstable servers have no built-in PgBouncer; with a General Purpose
// SKU, raise postgresMaxConnections (or point the DSN at PgBouncer on port 6432) and maximumInstanceCount together.
param postgresSkuName string = 'Standard_B1ms'
@allowed(['Burstable', 'GeneralPurpose', 'MemoryOptimized'])
param postgresSkuTier string = 'Burstable'
@description('max_connections of the server (50 is the most a B1ms allows)')
param postgresMaxConnections int = 50
@description('connections Azure keeps for itself (azure_superuser, replication, monitoring)')
param postgresReservedConnections int = 15
@description('connections left for migrations, the CLI and an operator\'s psql')
param connectionHeadroom int = 5
@description('TENANTFLOW_POSTGRES_POOL_SIZE: connections one instance may hold')
param postgresPoolSize int = 6
@description('Flex Consumption scale-out limit')
param maximumInstanceCount int = 5

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = { 'azd-env-name': environmentName }
var appName = 'func-${token}'
var appRole = 'id-${token}'   // the identity's name is also its PostgreSQL login
var packageContainer = 'deploymentpackage'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: appRole
  location: location
  tags: tags
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${token}'
  location: location
  tags: tags
  properties: { sku: { name: 'PerGB2018' }, retentionInDays: 30 }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${token}'
  location: location
  tags: tags
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${token}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: { allowBlobPublicAccess: false, allowSharedKeyAccess: false, minimumTlsVersion: 'TLS1_2' }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource packages 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: packageContainer
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${token}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource postgres 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: 'psql-${token}'
  location: location
  tags: tags
  sku: { name: postgresSkuName, tier: postgresSkuTier }
  properties: {
    version: '16'
    administratorLogin: 'tenantflow_owner'   // owns the schema; `tenantflow db migrate` runs as it
    administratorLoginPassword: postgresOwnerPassword
    authConfig: { activeDirectoryAuth: 'Enabled', passwordAuth: 'Enabled', tenantId: subscription().tenantId }
    storage: { storageSizeGB: 32 }
    network: { publicNetworkAccess: 'Enabled' }
  }
}

// Flex Consumption has no fixed outbound IPs without VNet integration: admit Azure-hosted callers (0.0.0.0 is
// Azure's "allow Azure services" rule) and the machine running azd. Put both in a VNet for production isolation.
resource postgresAzureAccess 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = {
  parent: postgres
  name: 'AllowAzureServices'
  properties: { startIpAddress: '0.0.0.0', endIpAddress: '0.0.0.0' }
}

resource postgresClientAccess 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (!empty(clientIpAddress)) {
  parent: postgres
  name: 'azd-client'
  properties: { startIpAddress: clientIpAddress, endIpAddress: clientIpAddress }
  dependsOn: [postgresAzureAccess]
}

// The principal running azd administers Entra logins: postprovision creates the app identity's login with it.
resource postgresEntraAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (!empty(principalId) && !empty(principalName)) {
  parent: postgres
  name: empty(principalId) ? 'none' : principalId
  properties: { principalType: principalType, principalName: principalName, tenantId: subscription().tenantId }
  dependsOn: [postgresAzureAccess, postgresClientAccess]
}

resource postgresConnections 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: postgres
  name: 'max_connections'
  properties: { value: string(postgresMaxConnections), source: 'user-override' }
  dependsOn: [postgresEntraAdmin]
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: postgres
  name: 'tenantflow'
  dependsOn: [postgresConnections]
}

// The app signs in as its identity's Entra login (created by postprovision with pgaadauth, member of nothing but
// the grants `tenantflow db migrate` gives it: not owner, not superuser, row-level security applies). No password.
var appDsn = 'host=${postgres.properties.fullyQualifiedDomainName} port=5432 dbname=tenantflow user=${appRole} sslmode=require'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-${token}'   // unique per environment, so `azd down --purge && azd up` can reuse it
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: purgeProtection ? true : null   // Key Vault refuses an explicit false
  }
}

// The values come from the azd environment, where preprovision stores them once: re-provisioning writes the same.
var secrets = {
  'encryption-key': encryptionKey
  'operator-key': operatorKey
  'postgres-owner-password': postgresOwnerPassword
}

resource vaultSecrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for item in items(secrets): {
  parent: vault
  name: item.key
  properties: { value: item.value, contentType: 'text/plain' }
}]

// Every role the identity needs exists before the app does (Key Vault references resolve on first start).
var storageRoles = {
  blobOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'         // Storage Blob Data Owner: package, host locks
  queueContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'  // Storage Queue Data Contributor: flow-runs
  tableContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'  // Storage Table Data Contributor: table store
}

resource storageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in items(storageRoles): {
  name: guid(storage.id, identity.id, role.value)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.value)
  }
}]

resource vaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, 'secrets-user')
  scope: vault
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, 'metrics-publisher')
  scope: insights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')
  }
}

// The operator running azd reads the secrets back (preprovision recovers them when the azd env is new).
resource vaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(principalId)) {
  name: guid(vault.id, empty(principalId) ? 'none' : principalId, 'secrets-officer')
  scope: vault
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7')
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'UserAssigned', userAssignedIdentities: { '${identity.id}': {} } }
  tags: union(tags, { 'azd-service-name': 'api' })
  dependsOn: [storageRoleAssignments, vaultSecretsUser, metricsPublisher, vaultSecrets, packages, database]
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${packageContainer}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identity.id }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: maximumInstanceCount, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.12' }
    }
    siteConfig: {
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
        { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }   // DefaultAzureCredential: this identity
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identity.properties.clientId};Authorization=AAD' }
        { name: 'TENANTFLOW_STORE', value: store }
        { name: 'TENANTFLOW_SQLITE_PATH', value: '/tmp/tenantflow.db' }   // only used when store=sqlite
        { name: 'TENANTFLOW_POSTGRES_DSN', value: appDsn }   // no secret in it: the password is an Entra token
        { name: 'TENANTFLOW_POSTGRES_ENTRA', value: 'true' }
        { name: 'TENANTFLOW_POSTGRES_POOL_SIZE', value: string(postgresPoolSize) }
        { name: 'TENANTFLOW_TABLE_CONNECTION', value: storage.properties.primaryEndpoints.table }   // managed identity
        { name: 'TENANTFLOW_TABLE_PREFIX', value: 'tf' }
        { name: 'TENANTFLOW_QUEUE_CONNECTION', value: storage.properties.primaryEndpoints.queue }   // managed identity
        { name: 'TENANTFLOW_RUN_QUEUE', value: 'flow-runs' }
        { name: 'TENANTFLOW_ENCRYPTION_KEY', value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/encryption-key)' }
        { name: 'TENANTFLOW_OPERATOR_KEY', value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/operator-key)' }
        { name: 'TENANTFLOW_TRUST_EASY_AUTH', value: 'false' }   // true only with App Service Authentication in front
        { name: 'TENANTFLOW_CAPTURE_PROMPTS', value: 'false' }   // true: model-call spans carry prompts and completions
        { name: 'TENANTFLOW_DEFAULT_ENDPOINT', value: defaultEndpoint }
        { name: 'TENANTFLOW_DEFAULT_API_KEY', value: '' }   // empty: Entra (this identity) or the tenants' own connections
        { name: 'TENANTFLOW_ALLOWED_HOSTS', value: '' }
        { name: 'TENANTFLOW_ALLOWED_HOST_SUFFIXES', value: '' }   // e.g. 'azure-api.net' to allow APIM gateways
        { name: 'TENANTFLOW_ALLOWED_KEY_VAULTS', value: '' }   // never the app's own vault: it holds the app's keys
        { name: 'TENANTFLOW_FLOWS_DIR', value: 'flows' }
        { name: 'TENANTFLOW_CONNECTIONS_FILE', value: 'shared/connections/static_connections.yaml' }
        { name: 'TENANTFLOW_PRICES_FILE', value: 'shared/services/prices.yaml' }
        { name: 'TENANTFLOW_CREDENTIAL_CACHE_TTL', value: '60' }
        { name: 'TENANTFLOW_API_KEY_CACHE_TTL', value: '5' }
        // one model call: 45 s × 3 attempts + 2 retry waits ≤ 30 s = 195 s, under the sync limit and the front
        // end's 230 s; a sync run whose flow may take longer answers 202 and runs from the queue
        { name: 'TENANTFLOW_MODEL_TIMEOUT_SECONDS', value: '45' }
        { name: 'TENANTFLOW_MODEL_MAX_ATTEMPTS', value: '3' }
        { name: 'TENANTFLOW_SYNC_LIMIT_SECONDS', value: '200' }
        // queue and timer runs end failed (deadline_exceeded) after 570 s, 30 s before host.json's functionTimeout
        { name: 'TENANTFLOW_RUN_DEADLINE_SECONDS', value: '570' }
      ]
    }
  }
}

output AZURE_FUNCTION_APP_NAME string = app.name
output TENANTFLOW_URL string = 'https://${app.properties.defaultHostName}'
output API_BASE_URL string = 'https://${app.properties.defaultHostName}/api'
output AZURE_KEY_VAULT_NAME string = vault.name
output POSTGRES_HOST string = postgres.properties.fullyQualifiedDomainName
output POSTGRES_DATABASE string = database.name
output POSTGRES_OWNER string = 'tenantflow_owner'
output POSTGRES_APP_ROLE string = appRole
output POSTGRES_APP_PRINCIPAL_ID string = identity.properties.principalId
output POSTGRES_ENTRA_ADMIN string = principalName
