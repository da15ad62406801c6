//! The GPU fleet's rules, without I/O: which addresses may be registered as GPU servers, the
//! worker URL of a registration, and which workers the standalone fleet holds for given
//! routing settings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use purrify_inference::client::{ConfigError, WorkerSpec};
use purrify_store::GpuServer;

use super::error::DomainError;
use super::tasks::Routing;

/// Cloud metadata services: AWS/GCP/Azure/OpenStack (169.254.169.254), Alibaba Cloud
/// (100.100.100.200), Azure's wire server (168.63.129.16), Oracle Cloud (192.0.0.192).
const METADATA_V4: [Ipv4Addr; 4] =
    [Ipv4Addr::new(169, 254, 169, 254), Ipv4Addr::new(100, 100, 100, 200), Ipv4Addr::new(168, 63, 129, 16), Ipv4Addr::new(192, 0, 0, 192)];

/// AWS IMDS over IPv6.
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

/// The IPv4 address an IPv6 address carries, for the forms that reach (or are translated to)
/// that IPv4 host: IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::/96` (and the local-use `64:ff9b:1::/48`), and 6to4 `2002:aabb:ccdd::/48`.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low32 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    // `::` and `::1` are IPv6's own unspecified and loopback addresses, refused as such.
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        return Some(low32());
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) {
        return Some(low32());
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

/// Why an address may not be registered, if it may not. An IPv6 address that carries an
/// IPv4 address is judged by that IPv4 address too: `::ffff:169.254.169.254` reaches the
/// metadata service as surely as the plain form.
pub fn refuse_address(ip: IpAddr, allow_private: bool) -> Option<&'static str> {
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = embedded_ipv4(v6)
        && let Some(why) = refuse_address(IpAddr::V4(v4), allow_private)
    {
        return Some(why);
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Some("unspecified and multicast addresses cannot be GPU servers");
    }
    if let IpAddr::V4(v4) = ip {
        if v4 == Ipv4Addr::BROADCAST {
            return Some("the broadcast address cannot be a GPU server");
        }
        // 0.0.0.0/8 means "this host" to the kernel (0.0.0.0 connects to loopback).
        if v4.octets()[0] == 0 {
            return Some("addresses in 0.0.0.0/8 cannot be GPU servers");
        }
    }
    if allow_private {
        return None;
    }
    let metadata = match ip {
        IpAddr::V4(v4) => METADATA_V4.contains(&v4),
        IpAddr::V6(v6) => METADATA_V6.contains(&v6),
    };
    if metadata {
        return Some("cloud metadata addresses cannot be GPU servers");
    }
    let (loopback, link_local) = match ip {
        IpAddr::V4(v4) => (v4.is_loopback(), v4.is_link_local()),
        IpAddr::V6(v6) => (v6.is_loopback(), v6.is_unicast_link_local()),
    };
    if loopback {
        return Some("loopback addresses are refused (start the gateway with --allow-private-workers for local testing)");
    }
    if link_local {
        return Some("link-local addresses are refused");
    }
    None
}

/// The worker URL of a GPU server registered at `ip:port`.
pub fn worker_url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
    }
}

/// The fleet the routing settings make: the default backend (the configured URL, else the
/// in-process worker), plus registered GPU servers in multi-backend mode; with
/// `fallback_to_default` off and servers registered, only the servers.
pub fn fleet_specs(routing: &Routing, servers: &[GpuServer]) -> Vec<WorkerSpec> {
    let default = routing.backend_url.clone().or(routing.default_backend_url.clone());
    let mut specs = Vec::new();
    if routing.multi_backend {
        specs.extend(servers.iter().map(|s| WorkerSpec::new(s.url.clone()).with_name(s.id.clone())));
    }
    let use_default = !routing.multi_backend || routing.fallback_to_default || specs.is_empty();
    if let Some(d) = default.filter(|_| use_default) {
        specs.push(WorkerSpec::new(d).with_name("default"));
    }
    specs
}

/// A fleet the settings cannot make, blamed on the field that holds the bad endpoint: the
/// default backend's `backend_url`, else a registered server's `ip` (and port).
pub fn fleet_sync_error(e: ConfigError, default: Option<&str>) -> DomainError {
    match &e {
        ConfigError::Endpoint { endpoint, .. } if Some(endpoint.as_str()) == default => DomainError::invalid("backend_url", e.to_string()),
        ConfigError::Endpoint { .. } => DomainError::invalid("ip", e.to_string()),
        ConfigError::Http(_) => DomainError::Internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        refuse_address(s.parse().unwrap(), false).is_some()
    }

    #[test]
    fn address_policy() {
        for bad in [
            "127.0.0.1",
            "127.8.8.8",
            "::1",
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "100.100.100.200",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "168.63.129.16",
            "192.0.0.192",
            "0.1.2.3",
        ] {
            assert!(refused(bad), "{bad} should be refused");
        }
        for good in ["203.0.113.7", "10.0.0.12", "192.168.1.20", "2001:db8::1", "192.0.0.193", "168.63.129.17"] {
            assert!(!refused(good), "{good} should be accepted");
        }
        assert!(refuse_address("127.0.0.1".parse().unwrap(), true).is_none(), "allowed for local testing");
        assert!(refuse_address("0.0.0.0".parse().unwrap(), true).is_some(), "never a real server");
    }

    #[test]
    fn ipv6_forms_carrying_a_refused_ipv4_address_are_refused() {
        for v4 in ["169.254.169.254", "127.0.0.1", "168.63.129.16", "192.0.0.192", "100.100.100.200", "169.254.7.7"] {
            let o: Vec<u16> = v4.parse::<Ipv4Addr>().unwrap().octets().iter().map(|&b| u16::from(b)).collect();
            let (hi, lo) = ((o[0] << 8) | o[1], (o[2] << 8) | o[3]);
            let forms = [
                format!("::ffff:{v4}"),
                format!("::{v4}"),
                format!("64:ff9b::{v4}"),
                format!("64:ff9b:1::{hi:x}:{lo:x}"),
                format!("2002:{hi:x}:{lo:x}::1"),
            ];
            for f in forms {
                assert!(refused(&f), "{f} carries {v4} and should be refused");
            }
        }
        // The same forms carrying an ordinary address are fine.
        for good in ["::ffff:203.0.113.7", "64:ff9b::203.0.113.7", "2002:cb00:7107::1", "::203.0.113.7"] {
            assert!(!refused(good), "{good} should be accepted");
        }
        // Never a server, whatever the flag: the mapped unspecified and broadcast addresses.
        assert!(refuse_address("::ffff:0.0.0.0".parse().unwrap(), true).is_some());
        assert!(refuse_address("::ffff:255.255.255.255".parse().unwrap(), true).is_some());
        assert!(refuse_address("::ffff:127.0.0.1".parse().unwrap(), true).is_none(), "loopback allowed for local testing");
    }

    #[test]
    fn fleet_sync_errors_name_the_field_holding_the_bad_endpoint() {
        let bad = |endpoint: &str| ConfigError::Endpoint { endpoint: endpoint.into(), reason: "no".into() };
        let field = |e: DomainError| match e {
            DomainError::Invalid { field, .. } => Some(field),
            _ => None,
        };
        let default = Some("http://default:8000");
        assert_eq!(field(fleet_sync_error(bad("http://default:8000"), default)), Some("backend_url"));
        assert_eq!(field(fleet_sync_error(bad("http://203.0.113.9:8000"), default)), Some("ip"));
        assert_eq!(field(fleet_sync_error(bad("http://203.0.113.9:8000"), None)), Some("ip"));
        let internal = fleet_sync_error(ConfigError::Http("tls".into()), default);
        assert!(matches!(internal, DomainError::Internal(_)), "internal causes are not a field error");
    }

    #[test]
    fn routing_decides_the_fleet() {
        let server = GpuServer {
            id: "gpu-1".into(),
            ip: "203.0.113.7".into(),
            port: 8000,
            url: "http://203.0.113.7:8000".into(),
            registered_at: 0,
            last_seen: 0,
        };
        let routing = |multi: bool, fallback: bool| Routing {
            backend_url: None,
            default_backend_url: Some("http://127.0.0.1:9".into()),
            multi_backend: multi,
            fallback_to_default: fallback,
            pool: None,
        };
        let names = |specs: Vec<WorkerSpec>| specs.into_iter().map(|s| s.endpoint).collect::<Vec<_>>();
        assert_eq!(
            names(fleet_specs(&routing(true, true), std::slice::from_ref(&server))),
            ["http://203.0.113.7:8000", "http://127.0.0.1:9"]
        );
        assert_eq!(names(fleet_specs(&routing(true, false), std::slice::from_ref(&server))), ["http://203.0.113.7:8000"]);
        assert_eq!(names(fleet_specs(&routing(true, false), &[])), ["http://127.0.0.1:9"], "no servers: the default serves");
        assert_eq!(names(fleet_specs(&routing(false, false), &[server])), ["http://127.0.0.1:9"]);
        assert_eq!(worker_url("2001:db8::1".parse().unwrap(), 80), "http://[2001:db8::1]:80");
    }
}
