<?php

declare(strict_types=1);

namespace UnifiedLogin\TestPeer;

use SimpleSAML\Module\exampleauth\Auth\Source\UserPass;

/**
 * The exampleauth:UserPass source, plus a `login_hint` query parameter on the
 * SingleSignOnService URL that prefills the username field.
 *
 * SimpleSAMLphp itself ignores `login_hint`. This source runs within the
 * SSOService.php request, so it reads the hint from that request's query
 * string and stores it as `core:username` in the authentication state. The
 * core:loginuserpass page shows that value in its username field when the
 * request carries no username of its own.
 *
 * Storing the hint in the state, not passing it as a `username` request
 * value, matters: a non-empty `username` request value makes the login page
 * try to log in with an empty password and show a failed login.
 */
class LoginHintUserPass extends UserPass
{
    /**
     * Stores the login hint in the state, then shows the login form.
     *
     * @param array &$state Information about the current authentication.
     */
    public function authenticate(&$state)
    {
        $hint = $_GET['login_hint'] ?? null;
        if (is_string($hint) && $hint !== '') {
            $state['core:username'] = $hint;
        }

        parent::authenticate($state);
    }
}
