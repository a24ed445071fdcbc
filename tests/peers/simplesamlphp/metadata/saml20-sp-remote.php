<?php

/*
 * The one SP that the test IdP trusts, as described by the test run's
 * parameters.php.
 */

$parameters = require dirname(__DIR__) . '/parameters.php';

// Either the whole Response or only the Assertion inside it is signed, never
// both, so that each run has exactly one signature for the SP to check.
$signing = $parameters['signing'];
if ($signing !== 'response' && $signing !== 'assertion') {
    throw new \Exception(
        "Invalid signing value '$signing' in parameters.php: expected 'response' or 'assertion'."
    );
}

// With an SP certificate (base64 DER) the IdP rejects AuthnRequests whose
// signature that certificate does not verify.
$spCertificate = $parameters['sp_certificate'] ?? '';

$metadata[$parameters['sp_entity_id']] = [
    'AssertionConsumerService' => [
        [
            'index' => 0,
            'isDefault' => true,
            'Location' => $parameters['acs_url'],
            'Binding' => 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST',
        ],
    ],

    'saml20.sign.response' => $signing === 'response',
    'saml20.sign.assertion' => $signing === 'assertion',

    'validate.authnrequest' => $spCertificate !== '',
    'NameIDFormat' => 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress',
];
if ($spCertificate !== '') {
    $metadata[$parameters['sp_entity_id']]['certData'] = $spCertificate;
}
