//! Abuse limits on the auth endpoints: keyed GCRA rate limits (the
//! `governor` crate), each a burst that refills at a steady rate. A refused
//! request is answered `429` with `Retry-After` before any work is done.
//!
//! | limit | key | burst, then one per |
//! | --- | --- | --- |
//! | sign-in (and change-password's check) | address | [`SIGN_IN_PER_ADDRESS`] |
//! | sign-in | client IP | [`SIGN_IN_PER_IP`] |
//! | sign-up | address | [`SIGN_UP_PER_ADDRESS`] |
//! | sign-up | client IP | [`SIGN_UP_PER_IP`] |
//! | verification and reset mails | address | [`MAIL_PER_ADDRESS`] |
//! | verification and reset mails | client IP | [`MAIL_PER_IP`] |
//!
//! The client IP is checked first, so junk addresses from one client are
//! refused before they reach the per-address table. Every table holds at
//! most [`MAX_KEYS`] keys: when full, keys whose bucket has refilled (they
//! carry no information) are dropped; if it is still full the request is
//! refused, so no stream of new keys can grow memory without bound or flush
//! the state of the keys being limited. An IPv6 client is keyed by its /64,
//! the block one subscriber usually gets. Behind a reverse proxy on the same
//! machine (a loopback peer), the client is the last `X-Forwarded-For`
//! entry, the one the proxy added (see `http::ip`). The state is in memory: a restart
//! forgets it.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// A burst of requests, refilled one per `every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

/// Sign-in attempts per address: 10, then one per 90 seconds (40 an hour).
/// Every attempt counts, successful or not, and is counted when it starts,
/// so parallel guesses cannot slip past while the first ones hash.
pub const SIGN_IN_PER_ADDRESS: Rate = Rate {
    burst: 10,
    every: Duration::from_secs(90),
};
/// Sign-in attempts per client: 30, then one per 2 seconds.
pub const SIGN_IN_PER_IP: Rate = Rate {
    burst: 30,
    every: Duration::from_secs(2),
};
/// Sign-ups per address (taken or not): 5, then one per minute.
pub const SIGN_UP_PER_ADDRESS: Rate = Rate {
    burst: 5,
    every: Duration::from_secs(60),
};
/// Sign-ups per client: 60, then one per 10 seconds.
pub const SIGN_UP_PER_IP: Rate = Rate {
    burst: 60,
    every: Duration::from_secs(10),
};
/// Verification and reset mails asked for one address: 3, then one per 5
/// minutes — nobody's inbox can be filled through us.
pub const MAIL_PER_ADDRESS: Rate = Rate {
    burst: 3,
    every: Duration::from_secs(5 * 60),
};
/// Verification and reset mails asked for by one client: 20, then one per
/// 30 seconds.
pub const MAIL_PER_IP: Rate = Rate {
    burst: 20,
    every: Duration::from_secs(30),
};
/// Most keys one limit tracks at once.
pub const MAX_KEYS: usize = 100_000;

/// One keyed limit.
pub struct Limit<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>,
    every: Duration,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    pub fn new(rate: Rate) -> Limit<K> {
        Limit::with_max_keys(rate, MAX_KEYS)
    }

    pub fn with_max_keys(rate: Rate, max_keys: usize) -> Limit<K> {
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(rate.every)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Limit {
            limiter: RateLimiter::keyed(quota),
            every: rate.every,
            max_keys,
        }
    }

    /// Counts a request for `key`, or refuses it with how long to wait.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        if self.limiter.len() >= self.max_keys {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            if self.limiter.len() >= self.max_keys {
                return Err(self.every);
            }
        }
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key of a client address: an IPv4 address, or the /64 of an IPv6 one.
pub fn client_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => (u128::from(v6) >> 64) << 64 | (1 << 32),
        },
    }
}

/// What an auth request is, for the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    SignIn,
    SignUp,
    /// A verification or password-reset mail.
    Mail,
}

/// Every limit of the auth endpoints.
pub struct AuthLimits {
    sign_in: (Limit<String>, Limit<u128>),
    sign_up: (Limit<String>, Limit<u128>),
    mail: (Limit<String>, Limit<u128>),
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            sign_in: (Limit::new(SIGN_IN_PER_ADDRESS), Limit::new(SIGN_IN_PER_IP)),
            sign_up: (Limit::new(SIGN_UP_PER_ADDRESS), Limit::new(SIGN_UP_PER_IP)),
            mail: (Limit::new(MAIL_PER_ADDRESS), Limit::new(MAIL_PER_IP)),
        }
    }
}

impl AuthLimits {
    /// Counts `action` from `client` (when known) for `address` (when it is
    /// one), client first; or refuses it with how long to wait.
    pub fn check(
        &self,
        action: Action,
        client: Option<IpAddr>,
        address: Option<&str>,
    ) -> Result<(), Duration> {
        let (per_address, per_ip) = match action {
            Action::SignIn => &self.sign_in,
            Action::SignUp => &self.sign_up,
            Action::Mail => &self.mail,
        };
        if let Some(ip) = client {
            per_ip.check(&client_key(ip))?;
        }
        if let Some(address) = address {
            per_address.check(&address.to_string())?;
        }
        Ok(())
    }

    /// Counts an attempt at `address`'s password outside sign-in (the
    /// current password of change-password).
    pub fn check_password(&self, address: &str) -> Result<(), Duration> {
        self.sign_in.0.check(&address.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_wait_of_about_one_period() {
        let limit = Limit::new(Rate {
            burst: 3,
            every: Duration::from_secs(60),
        });
        for _ in 0..3 {
            assert_eq!(limit.check(&"a"), Ok(()));
        }
        let wait = limit.check(&"a").expect_err("the fourth waits");
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(limit.check(&"b"), Ok(()), "other keys are not affected");
    }

    #[test]
    fn the_table_never_holds_more_than_its_keys() {
        let limit = Limit::with_max_keys(
            Rate {
                burst: 2,
                every: Duration::from_secs(3600),
            },
            100,
        );
        for i in 0..1000 {
            let _ = limit.check(&i);
            assert!(limit.len() <= 100, "{} keys after {i}", limit.len());
        }
        // Full of live keys: a new one is refused rather than flushing them.
        assert!(limit.check(&5000).is_err());
        assert_eq!(limit.check(&0), Err(Duration::from_secs(3600)));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(v4), client_key(mapped));
        assert_ne!(client_key(v4), client_key("0.0.0.0".parse().unwrap()));
    }
}
