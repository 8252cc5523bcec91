//! Resource writes: create and update, with the writer's in-memory copy of
//! every resource it has read (each create needs its resource's capacity,
//! zone and opening hours).

use rusqlite::params;
use uuid::Uuid;

use super::{
    Change, Changed, EntityKind, OpResult, Outcome, RESOURCE_CACHE, WriterTask, check_version,
    not_found,
};
use crate::{
    domain::{
        resource::{NewResource, Resource, ResourcePatch},
        time::{micros, now},
        version::VersionMatch,
    },
    error::AppError,
    store::sqlite::queries::direct as queries,
};

impl WriterTask {
    pub(super) fn resource(&mut self, id: Uuid) -> anyhow::Result<Option<Resource>> {
        if let Some(resource) = self.resources.get(&id) {
            return Ok(Some(resource.clone()));
        }
        let found = queries::resource(&self.conn, id)?;
        if let Some(resource) = &found {
            self.remember(resource.clone());
        }
        Ok(found)
    }

    pub(super) fn remember(&mut self, resource: Resource) {
        if self.resources.len() >= RESOURCE_CACHE {
            self.resources.clear();
        }
        self.resources.insert(resource.id, resource);
    }

    pub(super) fn create_resource(&mut self, new: &NewResource) -> anyhow::Result<OpResult> {
        if let Some(id) = new.id
            && self.resource(id)?.is_some()
        {
            return Ok(Err(AppError::Conflict(format!(
                "a resource with id {id} already exists"
            ))));
        }
        let resource = Resource::create(new.clone(), now());
        self.save_resource(&resource, true)?;
        self.enqueue(EntityKind::Resource, resource.id, resource.version);
        Ok(Ok(Outcome::Resource(resource, Change::Created)))
    }

    pub(super) fn update_resource(
        &mut self,
        id: Uuid,
        patch: &ResourcePatch,
        if_match: Option<&VersionMatch>,
    ) -> anyhow::Result<OpResult> {
        let Some(mut resource) = self.resource(id)? else {
            return Ok(Err(not_found("resource", id)));
        };
        if let Err(error) = check_version(if_match, resource.version) {
            return Ok(Err(error));
        }
        if !resource.apply(patch.clone(), now()) {
            return Ok(Ok(Outcome::Resource(resource, Change::Unchanged)));
        }
        self.save_resource(&resource, false)?;
        self.enqueue(EntityKind::Resource, resource.id, resource.version);
        Ok(Ok(Outcome::Resource(resource, Change::Updated)))
    }

    /// Writes a resource row and hands it to the caches; the caller decides
    /// whether it goes to PostgreSQL (local writes) or came from there.
    pub(super) fn save_resource(
        &mut self,
        resource: &Resource,
        insert: bool,
    ) -> anyhow::Result<()> {
        let sql = if insert {
            "INSERT INTO resources (id, name, capacity, timezone, slot_minutes, opening_hours, version, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        } else {
            "UPDATE resources SET name = ?2, capacity = ?3, timezone = ?4, slot_minutes = ?5, opening_hours = ?6, \
             version = ?7, created_at = ?8, updated_at = ?9 WHERE id = ?1"
        };
        self.conn.prepare_cached(sql)?.execute(params![
            resource.id.hyphenated().to_string(),
            resource.name,
            i64::from(resource.capacity),
            resource.timezone,
            i64::from(resource.slot_minutes),
            resource
                .opening_hours
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
            resource.version,
            micros(resource.created_at),
            micros(resource.updated_at),
        ])?;
        self.changes.push(Changed::Resource(resource.clone()));
        self.remember(resource.clone());
        Ok(())
    }
}
