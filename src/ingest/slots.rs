//! Association slots: a connection that has not yet sent a whole A-ASSOCIATE-RQ holds only a
//! pending slot (a larger pool, for a short time-out); an association slot, counted globally
//! and per peer address, is taken once the request is in. Idle or slow peers thus cannot lock
//! real modalities out of `max_associations`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The pools shared by the plain and the TLS listener.
#[derive(Debug)]
pub struct Slots {
    pending: Arc<Semaphore>,
    associations: Arc<Semaphore>,
    per_peer_max: usize,
    per_peer: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Why an association slot was refused (also the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AssociationLimit,
    PeerLimit,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::AssociationLimit => "association_limit",
            Refusal::PeerLimit => "peer_limit",
        }
    }
}

/// An association slot; freed (globally and for its peer) when dropped.
#[derive(Debug)]
pub struct AssociationSlot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    per_peer: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for AssociationSlot {
    fn drop(&mut self) {
        let mut m = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl Slots {
    pub fn new(max_associations: usize, per_peer_max: usize, max_pending: usize) -> Slots {
        Slots {
            pending: Arc::new(Semaphore::new(max_pending)),
            associations: Arc::new(Semaphore::new(max_associations)),
            per_peer_max,
            per_peer: Arc::default(),
        }
    }

    /// A pending-connection slot, if the pool has one.
    pub fn pending(&self) -> Option<OwnedSemaphorePermit> {
        self.pending.clone().try_acquire_owned().ok()
    }

    /// Whether [`Self::associate`] would refuse now (a hint: the slot is taken later).
    pub fn would_refuse(&self, ip: IpAddr) -> Option<Refusal> {
        let ip = canonical(ip);
        let m = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(&ip).copied().unwrap_or(0) >= self.per_peer_max {
            return Some(Refusal::PeerLimit);
        }
        (self.associations.available_permits() == 0).then_some(Refusal::AssociationLimit)
    }

    /// An association slot for a peer at `ip`, within the global and the per-peer limit.
    pub fn associate(&self, ip: IpAddr) -> Result<AssociationSlot, Refusal> {
        let ip = canonical(ip);
        let mut m = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.per_peer_max {
            if *n == 0 {
                m.remove(&ip);
            }
            return Err(Refusal::PeerLimit);
        }
        let permit = self
            .associations
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::AssociationLimit);
        let permit = match permit {
            Ok(p) => p,
            Err(e) => {
                if *n == 0 {
                    m.remove(&ip);
                }
                return Err(e);
            }
        };
        *n += 1;
        Ok(AssociationSlot {
            _permit: permit,
            ip,
            per_peer: self.per_peer.clone(),
        })
    }
}

/// An IPv4-mapped IPv6 address counts as its IPv4 form.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_and_per_peer_limits_hold_and_free_on_drop() {
        let s = Slots::new(3, 2, 10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        let a1 = s.associate(a).unwrap();
        let _a2 = s.associate(a).unwrap();
        assert_eq!(s.associate(a).unwrap_err(), Refusal::PeerLimit);
        assert_eq!(s.would_refuse(a), Some(Refusal::PeerLimit));
        let _b1 = s.associate(b).unwrap();
        assert_eq!(
            s.associate("10.0.0.3".parse().unwrap()).unwrap_err(),
            Refusal::AssociationLimit
        );
        assert_eq!(
            s.associate("10.0.0.2".parse().unwrap()).unwrap_err(),
            Refusal::AssociationLimit
        );
        drop(a1);
        assert_eq!(s.would_refuse(a), None);
        let _a3 = s.associate(a).unwrap();
        assert!(s.per_peer.lock().unwrap().len() == 2);
    }

    #[test]
    fn the_pending_pool_is_separate() {
        let s = Slots::new(1, 1, 2);
        let _p1 = s.pending().unwrap();
        let _p2 = s.pending().unwrap();
        assert!(s.pending().is_none());
        assert!(s.associate("10.0.0.1".parse().unwrap()).is_ok());
    }
}
