<?php

/*
 * Authentication sources of the test IdP: the administrator login and a
 * fixed set of users with passwords.
 */

require_once __DIR__ . '/LoginHintUserPass.php';

$config = [
    'admin' => [
        'core:AdminPassword',
    ],

    // Keys are "<username>:<password>", and each value lists the attributes
    // that the IdP releases for that user.
    'example-userpass' => [
        'UnifiedLogin\TestPeer\LoginHintUserPass',

        'jane@example.com:jane-idp-password' => [
            'email' => 'jane@example.com',
            'upn' => 'jane@example.com',
            'givenName' => 'Jane',
            'sn' => 'Doe',
        ],
        'omar@example.com:omar-idp-password' => [
            'email' => 'omar@example.com',
            'upn' => 'omar@example.com',
            'givenName' => 'Omar',
            'sn' => 'Haddad',
        ],
    ],
];
