<?php

/*
 * SimpleSAMLphp 1.19 main configuration for the test IdP.
 *
 * The test harness copies this file into a fresh run folder, next to the
 * parameters.php file that it generates for that run. Every path below stays
 * inside that run folder, and nothing here makes SimpleSAMLphp contact
 * another host.
 */

$root = dirname(__DIR__);
$parameters = require $root . '/parameters.php';
$port = $parameters['port'];

$config = [
    // A full URL, so that generated links and the IdP entity ID name the
    // loopback port that PHP's built-in web server listens on.
    'baseurlpath' => $parameters['base_url'] . '/',

    'certdir' => $root . '/cert/',
    'loggingdir' => $root . '/log/',
    'datadir' => $root . '/data/',
    'tempdir' => $root . '/tmp',
    'metadatadir' => $root . '/metadata/',

    'technicalcontact_name' => 'Test IdP administrator',
    'technicalcontact_email' => 'admin@example.com',
    'timezone' => 'UTC',

    // Random for each run.
    'secretsalt' => $parameters['secret_salt'],
    'auth.adminpassword' => $parameters['admin_password'],
    'admin.protectindexpage' => false,
    // The tests fetch the IdP metadata without logging in as administrator.
    'admin.protectmetadata' => false,
    // The admin page would otherwise ask a remote host for newer releases.
    'admin.checkforupdates' => false,

    'trusted.url.domains' => ['127.0.0.1:' . $port],
    'enable.http_post' => false,

    'debug' => [
        // Writes every SAML message sent and received to the log file.
        'saml' => true,
        'backtraces' => true,
        'validatexml' => false,
    ],
    'showerrors' => true,
    // The error report form would send mail.
    'errorreporting' => false,

    'logging.level' => SimpleSAML\Logger::DEBUG,
    'logging.handler' => 'file',
    'logging.logfile' => 'simplesamlphp.log',
    'logging.processname' => 'simplesamlphp',
    'statistics.out' => [
        [
            'class' => 'core:Log',
            'level' => 'notice',
        ],
    ],

    'proxy' => null,

    'enable.saml20-idp' => true,
    'enable.shib13-idp' => false,
    'enable.adfs-idp' => false,

    // Modules that are not listed stay as the package ships them, and the
    // enabled-by-default ones that this IdP has no use for are turned off.
    'module.enable' => [
        'core' => true,
        'saml' => true,
        'exampleauth' => true,
        'admin' => true,
        'adfs' => false,
        'authorize' => false,
        'exampleattributeserver' => false,
        'ldap' => false,
        'memcookie' => false,
        'multiauth' => false,
        'portal' => false,
        'sanitycheck' => false,
    ],

    'session.duration' => 60 * 60,
    'session.datastore.timeout' => 60 * 60,
    'session.state.timeout' => 60 * 60,
    // Cookies do not separate ports, so each cookie name carries the port.
    // Two IdPs on 127.0.0.1 then keep separate sessions in one cookie jar.
    'session.cookie.name' => 'SimpleSAMLSessionID' . $port,
    'session.cookie.lifetime' => 0,
    'session.cookie.path' => '/',
    'session.cookie.domain' => null,
    // The IdP serves plain HTTP, and RFC 6265 lets a client send a Secure
    // cookie only over a secure channel. SameSite=None would require Secure,
    // so no SameSite attribute is set.
    'session.cookie.secure' => false,
    'session.cookie.samesite' => null,
    'session.phpsession.cookiename' => 'SimpleSAML' . $port,
    'session.phpsession.savepath' => $root . '/sessions',
    'session.phpsession.httponly' => true,
    'session.authtoken.cookiename' => 'SimpleSAMLAuthToken' . $port,
    'session.rememberme.enable' => false,

    'language.available' => ['en'],
    'language.default' => 'en',
    'language.parameter.setcookie' => false,
    'language.cookie.secure' => false,

    'theme.use' => 'default',
    'template.auto_reload' => false,
    'production' => true,

    'metadata.sources' => [
        ['type' => 'flatfile', 'directory' => $root . '/metadata'],
    ],
    'metadata.sign.enable' => false,

    'store.type' => 'phpsession',
];
