//! What a caught panic said. Rally catches panics at two boundaries — an HTTP handler (the
//! request gets a 500) and a campaign's core (the campaign reloads from its store) — and logs
//! the message once, as an Error line.

use std::any::Any;

/// The panic's message, when it was a string (it nearly always is).
pub fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_both_kinds_of_string_panic() {
        let caught = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(super::message(caught.as_ref()), "plain");
        let caught = std::panic::catch_unwind(|| panic!("formatted {}", 1)).unwrap_err();
        assert_eq!(super::message(caught.as_ref()), "formatted 1");
    }
}
