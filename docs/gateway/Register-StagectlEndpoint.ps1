#Requires -RunAsAdministrator
#Requires -Version 5.1
<#
.SYNOPSIS
Registers the StagectlMigration JEA endpoint on the PowerShell gateway (docs/operator-guide.md §1).

.DESCRIPTION
Run it in Windows PowerShell 5.1 on the gateway, from the folder holding StagectlMigration.psrc and
StagectlMigration.pssc. It
  1. checks that ExchangeOnlineManagement is installed for all users and that the app's certificate is in
     Cert:\LocalMachine\My with its private key;
  2. installs the role capability in C:\Program Files\WindowsPowerShell\Modules\StagectlJea\RoleCapabilities,
     with this tenant's AppId, certificate thumbprint and organization in place of the placeholders, and
     lets only Administrators and SYSTEM change that folder;
  3. writes the session configuration with the connecting group, checks it with
     Test-PSSessionConfigurationFile and registers it (WinRM restarts: open sessions end);
  4. with -ListenerThumbprint, creates the WinRM HTTPS listener and its firewall rule if there is none.
Running it again replaces the endpoint with the files as they are now.

.EXAMPLE
.\Register-StagectlEndpoint.ps1 -ConnectingGroup 'CONTOSO\stagectl-controllers' `
    -AppId 'b1a6f0c2-0d5e-4f43-9a1e-1f2d3c4b5a69' -CertificateThumbprint 'A1B2...40 hex digits' `
    -Organization 'contoso.onmicrosoft.com' -ListenerThumbprint 'C3D4...'
#>
[CmdletBinding()]
param(
    # The Windows group (or account) the controller's gateway credentials belong to.
    [Parameter(Mandatory)] [string] $ConnectingGroup,
    # The Entra app's Application (client) ID.
    [Parameter(Mandatory)] [ValidatePattern('^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$')] [string] $AppId,
    # The thumbprint of the certificate uploaded to the app, installed in Cert:\LocalMachine\My.
    [Parameter(Mandatory)] [ValidatePattern('^[0-9a-fA-F]{40}$')] [string] $CertificateThumbprint,
    # The tenant's primary .onmicrosoft.com domain.
    [Parameter(Mandatory)] [ValidatePattern('^[A-Za-z0-9-]+\.onmicrosoft\.(com|us|de)$')] [string] $Organization,
    # The endpoint's name: the controller's exchange.psrp.configurationName.
    [string] $Name = 'StagectlMigration',
    # A certificate in Cert:\LocalMachine\My for the WinRM HTTPS listener (omit if one exists).
    [ValidatePattern('^[0-9a-fA-F]{40}$')] [string] $ListenerThumbprint
)

$ErrorActionPreference = 'Stop'
$source = $PSScriptRoot
$thumbprint = $CertificateThumbprint.ToUpperInvariant()

# --- 1. prerequisites -----------------------------------------------------------------------------------
$exo = Get-Module -ListAvailable -Name ExchangeOnlineManagement | Sort-Object Version -Descending | Select-Object -First 1
if (-not $exo) {
    throw 'ExchangeOnlineManagement is not installed: Install-Module ExchangeOnlineManagement -Scope AllUsers'
}
if ($exo.ModuleBase -like "$env:USERPROFILE*") {
    throw "ExchangeOnlineManagement is installed for $env:USERNAME only; the JEA virtual account cannot load it: Install-Module ExchangeOnlineManagement -Scope AllUsers"
}
Write-Host "ExchangeOnlineManagement $($exo.Version) at $($exo.ModuleBase)"

$appCertificate = Get-Item -Path "Cert:\LocalMachine\My\$thumbprint" -ErrorAction SilentlyContinue
if (-not $appCertificate) { throw "No certificate $thumbprint in Cert:\LocalMachine\My" }
if (-not $appCertificate.HasPrivateKey) { throw "The certificate $thumbprint has no private key on this machine" }
Write-Host "app certificate $thumbprint ($($appCertificate.Subject)), valid until $($appCertificate.NotAfter)"

# --- 2. the role capability ---------------------------------------------------------------------------
$module = Join-Path $env:ProgramFiles 'WindowsPowerShell\Modules\StagectlJea'
$capabilities = Join-Path $module 'RoleCapabilities'
New-Item -ItemType Directory -Force -Path $capabilities | Out-Null
$manifest = Join-Path $module 'StagectlJea.psd1'
if (-not (Test-Path $manifest)) {
    # A module folder needs a manifest of its own name for JEA to find RoleCapabilities in it.
    New-ModuleManifest -Path $manifest -Description 'stagectl JEA role capabilities' -ModuleVersion '1.0'
}
$psrc = (Get-Content -Raw -Path (Join-Path $source 'StagectlMigration.psrc')).
    Replace('__APP_ID__', $AppId).
    Replace('__CERTIFICATE_THUMBPRINT__', $thumbprint).
    Replace('__ORGANIZATION__', $Organization)
Set-Content -Path (Join-Path $capabilities 'StagectlMigration.psrc') -Value $psrc -Encoding UTF8
# Whoever can edit a role capability can give themselves any command: Administrators and SYSTEM only.
& icacls.exe $module /inheritance:r /grant:r '*S-1-5-32-544:(OI)(CI)F' '*S-1-5-18:(OI)(CI)F' '*S-1-5-32-545:(OI)(CI)RX' | Out-Null
if ($LASTEXITCODE -ne 0) { throw "icacls could not set the permissions of $module" }
Write-Host "role capability: $(Join-Path $capabilities 'StagectlMigration.psrc')"

# --- 3. the session configuration ---------------------------------------------------------------------
$data = Join-Path $env:ProgramData 'Stagectl'
New-Item -ItemType Directory -Force -Path $data, (Join-Path $data 'Transcripts') | Out-Null
$pssc = Join-Path $data 'StagectlMigration.pssc'
$session = (Get-Content -Raw -Path (Join-Path $source 'StagectlMigration.pssc')).Replace('__CONNECTING_GROUP__', $ConnectingGroup)
Set-Content -Path $pssc -Value $session -Encoding UTF8
if (-not (Test-PSSessionConfigurationFile -Path $pssc)) {
    throw "$pssc is not a valid session configuration file (Test-PSSessionConfigurationFile -Verbose says why)"
}
if (Get-PSSessionConfiguration -Name $Name -ErrorAction SilentlyContinue) {
    Unregister-PSSessionConfiguration -Name $Name -Force
}
Register-PSSessionConfiguration -Name $Name -Path $pssc -Force | Out-Null
Write-Host "endpoint $Name registered for $ConnectingGroup"

# --- 4. optional: the WinRM HTTPS listener ------------------------------------------------------------
if ($ListenerThumbprint) {
    $https = Get-ChildItem -Path WSMan:\localhost\Listener | Where-Object { $_.Keys -contains 'Transport=HTTPS' }
    if ($https) {
        Write-Host 'a WinRM HTTPS listener exists already; left as it is'
    } else {
        New-Item -Path WSMan:\localhost\Listener -Transport HTTPS -Address * `
            -CertificateThumbPrint $ListenerThumbprint.ToUpperInvariant() -Force | Out-Null
        Write-Host 'WinRM HTTPS listener created on port 5986'
    }
    if (-not (Get-NetFirewallRule -DisplayName 'WinRM HTTPS (stagectl)' -ErrorAction SilentlyContinue)) {
        New-NetFirewallRule -DisplayName 'WinRM HTTPS (stagectl)' -Direction Inbound -Protocol TCP `
            -LocalPort 5986 -Action Allow -Profile Domain, Private | Out-Null
    }
}

Write-Host @"

Test it from another Windows machine as a member of $ConnectingGroup (operator guide §1.7):
  `$s = New-PSSession -ComputerName $env:COMPUTERNAME -UseSSL -ConfigurationName $Name
  Invoke-Command `$s { Get-Command } | Sort-Object Name
  Invoke-Command `$s { Connect-ExchangeOnline -AppId $AppId -CertificateThumbprint $thumbprint -Organization $Organization -ShowBanner:`$false }
  Invoke-Command `$s { Get-MigrationBatch -ResultSize Unlimited | Select-Object -Property Identity,Status,TotalCount }
  Invoke-Command `$s { Get-Mailbox -ResultSize 1 }    # must fail: not visible in this endpoint
"@
