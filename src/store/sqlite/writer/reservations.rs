//! Reservation writes: create (with the capacity check), change and cancel.
//! Each is a handful of cached prepared statements on the writer's own
//! connection; rows written earlier in the same group are visible to later
//! capacity checks because they share the open transaction.

use uuid::Uuid;

use super::{
    Booking, Change, Changed, EntityKind, OpResult, Outcome, RESOURCE_CACHE, WriterTask,
    check_bookable, check_version, full, not_found,
};
use crate::{
    domain::{
        auth::Principal,
        capacity::{Hold, fits},
        reservation::{Reservation, ReservationPatch, Status},
        time::{micros, now},
        version::VersionMatch,
    },
    error::AppError,
    store::sqlite::{
        queries::direct as queries,
        rows::{HashedReservationRow, RESERVATION_COLUMNS},
    },
};
use anyhow::Context;
use rusqlite::{OptionalExtension, params};

impl WriterTask {
    pub(super) fn create_reservation(
        &mut self,
        booking: &Booking,
    ) -> anyhow::Result<Result<(Reservation, Change), AppError>> {
        let new = &booking.new;
        let user_id = booking.user_id.as_str();
        let request_hash = &booking.fingerprint;

        if let Some(id) = new.id
            && let Some((reservation, stored_hash)) = self.existing(id)?
        {
            return Ok(if stored_hash == *request_hash {
                Ok((reservation, Change::Replayed))
            } else {
                Err(AppError::Conflict(format!(
                    "reservation {id} already exists with different content"
                )))
            });
        }
        let Some(resource) = self.resource(new.resource_id)? else {
            return Ok(Err(AppError::validation(
                "resource_id",
                "no resource with this id exists",
            )));
        };
        if let Err(error) = check_bookable(&resource, new.starts_at, new.ends_at) {
            return Ok(Err(error));
        }
        let (start, end) = (micros(new.starts_at), micros(new.ends_at));
        let holds = self.holds(resource.id, start, end, None)?;
        if !fits(holds, start, end, new.party_size, resource.capacity) {
            return Ok(Err(full(&resource, new.party_size)));
        }
        let at = now();
        if !booking.exempt
            && let Err(over) = self.quotas.check(user_id, resource.id, micros(at))
        {
            metrics::counter!("reservoir_rate_limited_total", "limit" => over.quota).increment(1);
            return Ok(Err(AppError::RateLimited {
                detail: format!("{} is limited to {}", over.quota, over.limit),
                retry_after_secs: over.retry_after_secs,
            }));
        }
        let reservation = Reservation {
            id: new.id.unwrap_or_else(Uuid::now_v7),
            resource_id: resource.id,
            user_id: user_id.to_owned(),
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            party_size: new.party_size,
            status: Status::Confirmed,
            version: 1,
            sync_state: self.dirty_state(),
            notes: new.notes.clone(),
            metadata: new.metadata.clone(),
            created_at: at,
            updated_at: at,
        };
        if !booking.exempt {
            self.quotas.record(user_id, resource.id, micros(at));
        }
        self.insert_reservation(&reservation, request_hash)?;
        self.enqueue(EntityKind::Reservation, reservation.id, reservation.version);
        self.changes.push(Changed::Reservation {
            spans: vec![(start, end)],
            reservation: reservation.clone(),
            // An id made here exists nowhere else; a client's id may have
            // been booked on another node and reached L1 through L2.
            fresh: new.id.is_none(),
        });
        Ok(Ok((reservation, Change::Created)))
    }

    /// A reservation by id with its create fingerprint, in one lookup: every
    /// create that carries a client id asks.
    pub(super) fn existing(&mut self, id: Uuid) -> anyhow::Result<Option<(Reservation, String)>> {
        let found = self
            .conn
            .prepare_cached(&format!(
                "SELECT {RESERVATION_COLUMNS}, request_hash FROM reservations WHERE id = ?1"
            ))?
            .query_row(
                [id.hyphenated().to_string()],
                HashedReservationRow::from_rusqlite,
            )
            .optional()?;
        found
            .map(HashedReservationRow::into_reservation)
            .transpose()
    }

    /// Confirmed holds on a resource overlapping [start, end), looking back
    /// only as far as its longest hold reaches.
    pub(super) fn holds(
        &mut self,
        resource_id: Uuid,
        start: i64,
        end: i64,
        exclude: Option<Uuid>,
    ) -> anyhow::Result<Vec<Hold>> {
        let reach = match self.longest.get(&resource_id) {
            Some(reach) => *reach,
            None => {
                if self.longest.len() >= RESOURCE_CACHE {
                    self.longest.clear();
                }
                let reach = queries::longest_hold(&self.conn, resource_id)?;
                self.longest.insert(resource_id, reach);
                reach
            }
        };
        Ok(queries::holds(
            &self.conn,
            resource_id,
            start,
            end,
            reach,
            exclude,
        )?)
    }

    /// Notes a row written on `resource_id` spanning [start, end), whatever
    /// its status, so the capacity check keeps looking far enough back.
    pub(super) fn stretch(&mut self, resource_id: Uuid, start: i64, end: i64) {
        if let Some(reach) = self.longest.get_mut(&resource_id) {
            *reach = (*reach).max(end - start);
        }
    }

    /// Inserts a new row (one prepared statement, reused by every create).
    pub(super) fn insert_reservation(
        &mut self,
        r: &Reservation,
        request_hash: &str,
    ) -> anyhow::Result<()> {
        self.stretch(r.resource_id, micros(r.starts_at), micros(r.ends_at));
        self.conn
            .prepare_cached(
                "INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size, status, \
                 version, sync_state, notes, metadata, request_hash, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?
            .execute(params![
                r.id.hyphenated().to_string(),
                r.resource_id.hyphenated().to_string(),
                r.user_id,
                micros(r.starts_at),
                micros(r.ends_at),
                i64::from(r.party_size),
                r.status.as_str(),
                r.version,
                r.sync_state.as_str(),
                r.notes,
                r.metadata.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string()),
                request_hash,
                micros(r.created_at),
                micros(r.updated_at),
            ])
            .context("inserting a reservation")?;
        Ok(())
    }

    /// Loads a reservation the principal may act on (others' are "not found").
    pub(super) fn owned(
        &mut self,
        principal: &Principal,
        id: Uuid,
    ) -> anyhow::Result<Option<Reservation>> {
        Ok(queries::reservation(&self.conn, id)?.filter(|r| principal.owns(&r.user_id)))
    }

    pub(super) fn update_reservation(
        &mut self,
        principal: &Principal,
        id: Uuid,
        patch: &ReservationPatch,
        if_match: Option<&VersionMatch>,
    ) -> anyhow::Result<OpResult> {
        let Some(current) = self.owned(principal, id)? else {
            return Ok(Err(not_found("reservation", id)));
        };
        if let Err(error) = check_version(if_match, current.version) {
            return Ok(Err(error));
        }
        if current.status != Status::Confirmed {
            return Ok(Err(AppError::Conflict(format!(
                "reservation {id} is {} and can no longer be changed",
                current.status.as_str()
            ))));
        }
        let mut next = match current.patched(patch, now()) {
            Err(errors) => return Ok(Err(AppError::Validation(errors))),
            Ok(None) => return Ok(Ok(Outcome::Reservation(current, Change::Unchanged))),
            Ok(Some(next)) => next,
        };
        let moved = next.starts_at != current.starts_at || next.ends_at != current.ends_at;
        if moved || next.party_size > current.party_size {
            let Some(resource) = self.resource(current.resource_id)? else {
                return Ok(Err(not_found("resource", current.resource_id)));
            };
            if moved && let Err(error) = check_bookable(&resource, next.starts_at, next.ends_at) {
                return Ok(Err(error));
            }
            let (start, end) = (micros(next.starts_at), micros(next.ends_at));
            // Its own current hold does not count against it.
            let holds = self.holds(resource.id, start, end, Some(id))?;
            if !fits(holds, start, end, next.party_size, resource.capacity) {
                return Ok(Err(full(&resource, next.party_size)));
            }
        }
        next.sync_state = self.dirty_state();
        self.stretch(
            next.resource_id,
            micros(next.starts_at),
            micros(next.ends_at),
        );
        self.conn
            .prepare_cached(
                "UPDATE reservations SET starts_at = ?2, ends_at = ?3, party_size = ?4, notes = ?5, metadata = ?6, \
                 version = ?7, updated_at = ?8, sync_state = ?9 WHERE id = ?1",
            )?
            .execute(params![
                id.hyphenated().to_string(),
                micros(next.starts_at),
                micros(next.ends_at),
                i64::from(next.party_size),
                next.notes,
                next.metadata
                    .as_ref()
                    .map(|m| serde_json::Value::Object(m.clone()).to_string()),
                next.version,
                micros(next.updated_at),
                next.sync_state.as_str(),
            ])?;
        self.enqueue(EntityKind::Reservation, id, next.version);
        self.changed(&next, &[&current]);
        Ok(Ok(Outcome::Reservation(next, Change::Updated)))
    }

    pub(super) fn cancel_reservation(
        &mut self,
        principal: &Principal,
        id: Uuid,
        if_match: Option<&VersionMatch>,
    ) -> anyhow::Result<OpResult> {
        let Some(mut reservation) = self.owned(principal, id)? else {
            return Ok(Err(not_found("reservation", id)));
        };
        if let Err(error) = check_version(if_match, reservation.version) {
            return Ok(Err(error));
        }
        match reservation.status {
            Status::Cancelled => {
                return Ok(Ok(Outcome::Reservation(reservation, Change::Unchanged)));
            }
            Status::Rejected => {
                return Ok(Err(AppError::Conflict(format!(
                    "reservation {id} was rejected and holds no capacity to cancel"
                ))));
            }
            Status::Confirmed => {}
        }
        reservation.status = Status::Cancelled;
        reservation.version += 1;
        reservation.updated_at = now();
        reservation.sync_state = self.dirty_state();
        self.conn
            .prepare_cached(
                "UPDATE reservations SET status = 'cancelled', version = ?2, updated_at = ?3, sync_state = ?4 \
                 WHERE id = ?1",
            )?
            .execute(params![
                id.hyphenated().to_string(),
                reservation.version,
                micros(reservation.updated_at),
                reservation.sync_state.as_str(),
            ])?;
        self.enqueue(EntityKind::Reservation, id, reservation.version);
        self.changed(&reservation, &[]);
        Ok(Ok(Outcome::Reservation(reservation, Change::Updated)))
    }

    /// Notes a changed reservation for the commit hook, with the spans whose
    /// availability it affects (its own and those of `before`).
    pub(super) fn changed(&mut self, reservation: &Reservation, before: &[&Reservation]) {
        let spans = std::iter::once(reservation)
            .chain(before.iter().copied())
            .map(|r| (micros(r.starts_at), micros(r.ends_at)))
            .collect();
        self.changes.push(Changed::Reservation {
            reservation: reservation.clone(),
            spans,
            fresh: false,
        });
    }
}
