// Tenantflow on Azure: a Flex Consumption function app (system-assigned managed identity), its storage account
// (deployment package, flow-runs queue, tables), PostgreSQL flexible server, Key Vault for the app's secrets,
// and Application Insights. Every TENANTFLOW_* setting the code reads (shared/settings.py SETTING_NAMES) is set
// below; secrets are Key Vault references resolved by the Functions host.
targetScope = 'resourceGroup'

@description('azd environment name; prefixes resource names')
param environmentName string
param location string = resourceGroup().location
@secure()
param postgresAdminPassword string
@secure()
@description('password of the tenantflow_app role the app connects as (create the role once, see below)')
param postgresAppPassword string
@secure()
@description('32 random bytes, base64: TENANTFLOW_ENCRYPTION_KEY (rotate by prepending a new kid:KEY)')
param encryptionKey string
@secure()
param operatorKey string
@description('Store backend: postgres (default here) or table')
@allowed(['postgres', 'table'])
param store string = 'postgres'
@description('endpoint of the shipped `default` static connection (an Azure OpenAI / Foundry resource); empty: flows use the tenants\' own connections')
param defaultEndpoint string = ''

var token = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var appName = 'func-${environmentName}-${token}'

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${token}'
  location: location
  properties: { sku: { name: 'PerGB2018' }, retentionInDays: 30 }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${token}'
  location: location
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${token}'
  location: location
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
  name: 'deploymentpackage'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${token}'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource postgres 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: 'psql-${token}'
  location: location
  sku: { name: 'Standard_B1ms', tier: 'Burstable' }
  properties: {
    version: '16'
    administratorLogin: 'tenantflow_owner'   // owns the schema; applies migrations
    administratorLoginPassword: postgresAdminPassword
    storage: { storageSizeGB: 32 }
    network: { publicNetworkAccess: 'Enabled' }
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: postgres
  name: 'tenantflow'
}

// Flex Consumption has no fixed outbound IPs without VNet integration: admit Azure-hosted callers only
// (0.0.0.0–0.0.0.0 is Azure's "allow Azure services" rule). Put both in a VNet for production isolation.
resource postgresAzureAccess 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = {
  parent: postgres
  name: 'AllowAzureServices'
  properties: { startIpAddress: '0.0.0.0', endIpAddress: '0.0.0.0' }
}

// The app connects as `tenantflow_app` (not owner, not superuser; row-level security applies). Create it once
// with: CREATE ROLE tenantflow_app LOGIN PASSWORD '<postgresAppPassword>' NOSUPERUSER NOBYPASSRLS; the app's
// migrations (run as the owner) grant it DML rights.
var appDsn = 'postgresql://tenantflow_app:${postgresAppPassword}@${postgres.properties.fullyQualifiedDomainName}:5432/tenantflow?sslmode=require'
var ownerDsn = 'postgresql://tenantflow_owner:${postgresAdminPassword}@${postgres.properties.fullyQualifiedDomainName}:5432/tenantflow?sslmode=require'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-${token}'
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
  }
}

var secrets = {
  'encryption-key': encryptionKey
  'postgres-dsn': appDsn
  'postgres-migration-dsn': ownerDsn
  'operator-key': operatorKey
}

resource vaultSecrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for item in items(secrets): {
  parent: vault
  name: item.key
  properties: { value: item.value }
}]

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  tags: { 'azd-service-name': 'api' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}deploymentpackage'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: 100, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'TENANTFLOW_STORE', value: store }
        { name: 'TENANTFLOW_SQLITE_PATH', value: '/tmp/tenantflow.db' }   // only used when store=sqlite
        { name: 'TENANTFLOW_POSTGRES_DSN', value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/postgres-dsn)' }
        { name: 'TENANTFLOW_POSTGRES_MIGRATION_DSN', value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/postgres-migration-dsn)' }
        { name: 'TENANTFLOW_TABLE_CONNECTION', value: storage.properties.primaryEndpoints.table }   // managed identity
        { name: 'TENANTFLOW_TABLE_PREFIX', value: 'tf' }
        { name: 'TENANTFLOW_QUEUE_CONNECTION', value: storage.properties.primaryEndpoints.queue }   // managed identity
        { name: 'TENANTFLOW_RUN_QUEUE', value: 'flow-runs' }
        { name: 'TENANTFLOW_ENCRYPTION_KEY', value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/encryption-key)' }
        { name: 'TENANTFLOW_OPERATOR_KEY', value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/operator-key)' }
        { name: 'TENANTFLOW_TRUST_EASY_AUTH', value: 'false' }   // true only with App Service Authentication in front
        { name: 'TENANTFLOW_DEFAULT_ENDPOINT', value: defaultEndpoint }
        { name: 'TENANTFLOW_DEFAULT_API_KEY', value: '' }   // empty: tenants bring their own connections
        { name: 'TENANTFLOW_ALLOWED_HOSTS', value: '' }
        { name: 'TENANTFLOW_FLOWS_DIR', value: 'flows' }
        { name: 'TENANTFLOW_CONNECTIONS_FILE', value: 'shared/connections/static_connections.yaml' }
        { name: 'TENANTFLOW_PRICES_FILE', value: 'shared/services/prices.yaml' }
        { name: 'TENANTFLOW_CREDENTIAL_CACHE_TTL', value: '60' }
      ]
    }
  }
}

// The app's identity: storage data (deployment package, queue, tables) and Key Vault secrets.
var roles = {
  blobOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  queueContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  tableContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in items(roles): {
  name: guid(storage.id, app.id, role.value)
  scope: storage
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.value)
  }
}]

resource vaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, app.id, 'secrets-user')
  scope: vault
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
  }
}

output AZURE_FUNCTION_APP_NAME string = app.name
output API_BASE_URL string = 'https://${app.properties.defaultHostName}/api'
