<?php

/*
 * The test IdP itself. Its entity ID is the URL of its metadata, which is
 * the entity ID that SimpleSAMLphp would generate for `__DYNAMIC:1__`.
 */

$parameters = require dirname(__DIR__) . '/parameters.php';

$metadata[$parameters['base_url'] . '/saml2/idp/metadata.php'] = [
    'host' => '__DEFAULT__',

    // Test-only key pair, relative to 'certdir' in config.php.
    'privatekey' => 'idp.key',
    'certificate' => 'idp.crt',
    'signature.algorithm' => 'http://www.w3.org/2001/04/xmldsig-more#rsa-sha256',

    'auth' => 'example-userpass',

    // The SP may or may not sign its requests, and the IdP has no SP
    // certificate to check them with.
    'validate.authnrequest' => false,

    'NameIDFormat' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
    'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:basic',

    'authproc' => [
        // The NameID is the value of the user's email attribute.
        10 => [
            'class' => 'saml:AttributeNameID',
            'attribute' => 'email',
            'Format' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
            'SPNameQualifier' => false,
        ],
    ],
];
