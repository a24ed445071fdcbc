//! The directory's rules for provisioned users. A change that breaks one of
//! them is detained for the administrator instead of applied.

use super::resources::UserRecord;
use crate::directory::parse_email;

/// Maximum length of the part of a login ID before `@`, in characters, that the
/// unified-communications server accepts.
pub const MAX_LOGIN_LOCAL_PART: usize = 21;

/// Whether role and directory-number changes are checked: they are not
/// allowed through synchronisation, but an administrator may approve them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// A change from the identity provider.
    Sync,
    /// An administrator applies a detained change.
    Administrator,
}

/// Returns every rule that `record` breaks, as sentences; empty when it can
/// be applied. `current` is the user's state before the change, `None` for a
/// new user.
pub fn violations(
    record: &UserRecord,
    current: Option<&UserRecord>,
    approval: Approval,
) -> Vec<String> {
    let mut problems = Vec::new();
    if record.family_name.is_none() {
        problems.push("the last name (name.familyName) is missing".to_owned());
    }
    match &record.email {
        None => {
            problems.push("the work email (emails[type eq \"work\"].value) is missing".to_owned())
        }
        Some(email) => {
            if let Err(error) = parse_email(email) {
                problems.push(format!("the work email is invalid: {error}"));
            }
        }
    }
    if let Some(mobile) = &record.mobile
        && !is_e164(mobile)
    {
        problems.push(format!(
            "the mobile number '{mobile}' is not in E.164 form, such as +16135550123"
        ));
    }
    let local_part = login_local_part(&record.user_name);
    if local_part.chars().count() > MAX_LOGIN_LOCAL_PART {
        problems.push(format!(
            "the login ID '{}' has {} characters before '@', more than {MAX_LOGIN_LOCAL_PART}",
            record.user_name,
            local_part.chars().count()
        ));
    }
    if let (Some(current), Approval::Sync) = (current, approval) {
        if record.role != current.role {
            problems.push("the role changes, which synchronisation may not do".to_owned());
        }
        if record.directory_number != current.directory_number {
            problems.push(
                "the directory number (phoneNumbers[type eq \"work\"]) changes, which synchronisation may not do"
                    .to_owned(),
            );
        }
    }
    problems
}

fn login_local_part(login_id: &str) -> &str {
    login_id
        .rsplit_once('@')
        .map_or(login_id, |(local, _)| local)
}

/// Checks that `number` is written in E.164 (`+`, country code, subscriber
/// number, at most 15 digits, no spaces) and is a valid number according to
/// libphonenumber's metadata.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    if digits.is_empty()
        || digits.len() > 15
        || digits.starts_with('0')
        || !digits.chars().all(|c| c.is_ascii_digit())
    {
        return false;
    }
    match phonenumber::parse(None, number) {
        Ok(parsed) => {
            phonenumber::is_valid(&parsed)
                && parsed.format().mode(phonenumber::Mode::E164).to_string() == number
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> UserRecord {
        UserRecord {
            user_name: "jdoe@contoso.example".into(),
            active: true,
            family_name: Some("Doe".into()),
            email: Some("jane@contoso.example".into()),
            mobile: Some("+16135550123".into()),
            ..UserRecord::default()
        }
    }

    #[test]
    fn e164_accepts_valid_numbers() {
        for number in [
            "+16135550123",
            "+442079460958",
            "+4930901820",
            "+61291924567",
        ] {
            assert!(is_e164(number), "{number} was rejected");
        }
    }

    #[test]
    fn e164_rejects_other_forms() {
        for number in [
            "16135550123",
            "+1 613 555 0123",
            "+1-613-555-0123",
            "(613) 555-0123",
            "+0123456789",
            "+1613555012345678",
            "+",
            "+1613abc0123",
            "+999123456",
            "tel:+16135550123",
        ] {
            assert!(!is_e164(number), "{number} was accepted");
        }
    }

    #[test]
    fn valid_record_has_no_violations() {
        assert!(violations(&valid(), None, Approval::Sync).is_empty());
    }

    #[test]
    fn missing_fields_and_bad_mobile_are_violations() {
        let record = UserRecord {
            family_name: None,
            email: None,
            mobile: Some("6135550123".into()),
            ..valid()
        };
        let problems = violations(&record, None, Approval::Sync);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("last name"));
        assert!(problems[1].contains("work email"));
        assert!(problems[2].contains("E.164"));
    }

    #[test]
    fn login_local_part_limit() {
        let at_limit = UserRecord {
            user_name: format!("{}@contoso.example", "a".repeat(21)),
            ..valid()
        };
        assert!(violations(&at_limit, None, Approval::Sync).is_empty());
        let over = UserRecord {
            user_name: format!("{}@contoso.example", "a".repeat(22)),
            ..valid()
        };
        let problems = violations(&over, None, Approval::Sync);
        assert!(problems[0].contains("22 characters"), "{problems:?}");
    }

    #[test]
    fn role_and_directory_number_changes_need_approval() {
        let current = valid();
        let changed = UserRecord {
            role: Some("Admin".into()),
            directory_number: Some("2001".into()),
            ..valid()
        };
        assert_eq!(
            violations(&changed, Some(&current), Approval::Sync).len(),
            2
        );
        assert!(violations(&changed, Some(&current), Approval::Administrator).is_empty());
        assert!(
            violations(&changed, None, Approval::Sync).is_empty(),
            "a new user may start with a role and a directory number"
        );
    }
}
