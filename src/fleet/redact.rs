//! Secrets out of everything printed: a Redis URL's password becomes `***` in logs, errors,
//! the status and `Debug`.

/// `url` with the password of its user info, if any, shown as `***`:
/// `redis://user:***@host:6379/`. Anything that is not a URL is returned as it is.
pub(super) fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match user_info.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        // `redis://secret@host/`: redis-rs reads a lone user info as the password.
        None => "***".to_owned(),
    };
    format!("{scheme}://{user}@{host}{path}")
}

/// The password in `url`, if it has one, for [`scrub`].
pub(super) fn password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let user_info = authority.rsplit_once('@')?.0;
    let password = user_info.split_once(':').map_or(user_info, |(_, p)| p);
    (!password.is_empty()).then(|| password.to_owned())
}

/// `text` with every one of `secrets` shown as `***`, and cut to at most `limit` bytes (at a
/// character boundary), so that no error repeats a password or fills a log line.
pub(super) fn scrub(text: &str, secrets: &[String], limit: usize) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        if !secret.is_empty() {
            text = text.replace(secret.as_str(), "***");
        }
    }
    if text.len() > limit {
        let mut end = limit.saturating_sub(3);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let cases = [
            ("redis://127.0.0.1:6379/", "redis://127.0.0.1:6379/", None),
            (
                "redis://user:s3cret@host:6379/0",
                "redis://user:***@host:6379/0",
                Some("s3cret"),
            ),
            (
                "rediss://:p%40ss@host/",
                "rediss://:***@host/",
                Some("p%40ss"),
            ),
            ("redis://s3cret@host", "redis://***@host", Some("s3cret")),
            ("redis://u:a@b@host/x", "redis://u:***@host/x", Some("a@b")),
            ("not a url", "not a url", None),
        ];
        for (given, shown, secret) in cases {
            assert_eq!(url(given), shown);
            assert_eq!(password(given).as_deref(), secret);
        }
        let secrets = vec!["s3cret".to_owned()];
        assert_eq!(scrub("WRONGPASS s3cret!", &secrets, 1024), "WRONGPASS ***!");
        let long = "é".repeat(1000);
        let cut = scrub(&long, &secrets, 1024);
        assert!(cut.len() <= 1024 && cut.ends_with("..."), "{}", cut.len());
    }
}
