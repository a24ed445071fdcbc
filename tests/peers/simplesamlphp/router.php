<?php

/*
 * Router script for PHP's built-in web server in front of SimpleSAMLphp's
 * www/ folder.
 *
 * It appends the `login_hint` query parameter of every SingleSignOnService
 * request to login-hints.txt in the run folder, one hint per line and
 * percent-encoded (RFC 3986, as rawurlencode writes it), so that a line break
 * inside a hint cannot split it. A request without the parameter adds no line.
 * Then it lets the server handle the request as usual.
 */

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);

if ($path === '/saml2/idp/SSOService.php' && isset($_GET['login_hint'])) {
    $hint = $_GET['login_hint'];
    // `login_hint[]=…` arrives as an array, which is recorded as its JSON text.
    if (!is_string($hint)) {
        $hint = json_encode($hint);
    }
    file_put_contents(__DIR__ . '/login-hints.txt', rawurlencode($hint) . "\n", FILE_APPEND | LOCK_EX);
}

return false;
