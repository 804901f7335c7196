//! MongoDB: challenges, their versions and test cases.

use super::*;

#[async_trait]
impl ChallengeStore for MongoStore {
    async fn create_challenge(&self, challenge: NewChallenge) -> StoreResult<Challenge> {
        let now = stored_now();
        let id = ChallengeId(self.next_id("challenges").await?);
        let test_cases = self.new_test_cases(id, &challenge.test_cases, now).await?;
        let document = doc! {
            "_id": id,
            "created_user_id": challenge.created_user_id,
            "name": &challenge.name,
            "description": challenge.description.as_deref(),
            "challenge_type": challenge_type_name(challenge.challenge_type),
            "init": &challenge.init,
            "solution": &challenge.solution,
            "times_to_run": i64::from(challenge.times_to_run),
            "expires_at": bson_time(challenge.expires_at),
            "version": 1_i64,
            "state": ChallengeState::Pending.as_str(),
            "init_at": Bson::Null,
            "init_errors": Bson::Null,
            "init_warnings": Bson::Array(Vec::new()),
            "created_at": bson_time(now),
            "test_cases": test_cases,
        };
        self.collection("challenges")
            .insert_one(&document)
            .await
            .map_err(backend)?;
        challenge_from(&document)
    }

    async fn get_challenge(&self, id: ChallengeId) -> StoreResult<Option<Challenge>> {
        let found = self
            .collection("challenges")
            .find_one(doc! { "_id": id })
            .await
            .map_err(backend)?;
        found.as_ref().map(challenge_from).transpose()
    }

    async fn list_challenges(
        &self,
        created_by: Option<UserId>,
        page: Page<ChallengeId>,
    ) -> StoreResult<Vec<Challenge>> {
        let mut filter = match created_by {
            Some(user_id) => doc! { "created_user_id": user_id },
            None => doc! {},
        };
        if let Some(after) = page.after {
            filter.insert("_id", doc! { "$lt": after });
        }
        let documents = self
            .find_many(
                "challenges",
                filter,
                doc! { "_id": -1 },
                i64::from(page.limit),
            )
            .await?;
        documents.iter().map(challenge_from).collect()
    }

    async fn update_challenge(
        &self,
        id: ChallengeId,
        expected_version: i64,
        update: ChallengeUpdate,
    ) -> StoreResult<Challenge> {
        let mut filter = doc! { "_id": id, "version": expected_version };
        let mut set = Document::new();
        if let Some(name) = &update.name {
            set.insert("name", name.as_str());
        }
        if let Some(description) = &update.description {
            set.insert("description", description.as_deref());
        }
        if let Some(times_to_run) = update.times_to_run {
            set.insert("times_to_run", i64::from(times_to_run));
        }
        if let Some(expires_at) = update.expires_at {
            set.insert("expires_at", bson_time(expires_at));
        }
        if let Some(new_version) = &update.new_version {
            let current = self
                .get_challenge(id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("challenge {id}")))?;
            if current.version != expected_version {
                return Err(StoreError::Conflict(format!(
                    "challenge {id} is at version {}, not {expected_version}",
                    current.version
                )));
            }
            // Kept before the switch: if the switch then misses, the copy
            // is of the still current version, which reads ignore.
            self.keep_test_cases(&current).await?;
            let test_cases = self
                .new_test_cases(id, &new_version.test_cases, stored_now())
                .await?;
            set.insert("init", new_version.init.as_str());
            set.insert("solution", new_version.solution.as_str());
            set.insert("version", expected_version + 1);
            set.insert("state", ChallengeState::Pending.as_str());
            set.insert("init_at", Bson::Null);
            set.insert("init_errors", Bson::Null);
            set.insert("init_warnings", Bson::Array(Vec::new()));
            set.insert("test_cases", test_cases);
            // An init result landing since the read changes the state (and
            // the kept copy would miss its expected results): then the
            // switch misses and the caller retries.
            filter.insert("state", current.state.as_str());
        }
        let updated = if set.is_empty() {
            self.collection("challenges")
                .find_one(filter)
                .await
                .map_err(backend)?
        } else {
            self.collection("challenges")
                .find_one_and_update(filter, doc! { "$set": set })
                .return_document(ReturnDocument::After)
                .await
                .map_err(backend)?
        };
        match updated {
            Some(document) => challenge_from(&document),
            None => match self.get_challenge(id).await? {
                None => Err(StoreError::NotFound(format!("challenge {id}"))),
                Some(challenge) => Err(StoreError::Conflict(format!(
                    "challenge {id} changed meanwhile (it is at version {}, {})",
                    challenge.version, challenge.state
                ))),
            },
        }
    }

    async fn list_test_cases(
        &self,
        challenge_id: ChallengeId,
        version: i64,
    ) -> StoreResult<Vec<TestCase>> {
        let Some(challenge) = self.get_challenge(challenge_id).await? else {
            return Ok(Vec::new());
        };
        if challenge.version == version {
            return Ok(challenge.test_cases);
        }
        let filter = doc! { "challenge_id": challenge_id, "version": version };
        let documents = self
            .find_many("past_test_cases", filter, doc! { "_id": 1 }, 0)
            .await?;
        documents
            .iter()
            .map(|document| test_case_from(document, challenge_id))
            .collect()
    }

    async fn set_challenge_init(
        &self,
        id: ChallengeId,
        version: i64,
        result: InitResult,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let challenge = self
            .get_challenge(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("challenge {id}")))?;
        if challenge.version != version {
            return Ok(false);
        }
        let update = match result {
            InitResult::Ready { expected, warnings } => {
                let mut cases = challenge.test_cases;
                for (case_id, result, reference_ms) in expected {
                    let case = cases
                        .iter_mut()
                        .find(|case| case.id == case_id)
                        .ok_or_else(|| {
                            StoreError::NotFound(format!("test case {case_id} of challenge {id}"))
                        })?;
                    case.expected = Some(result);
                    case.reference_ms = reference_ms;
                }
                let cases = cases
                    .iter()
                    .map(|case| test_case_document(case).map(Bson::Document))
                    .collect::<StoreResult<Vec<_>>>()?;
                doc! { "$set": {
                    "state": ChallengeState::Ready.as_str(),
                    "init_at": bson_time(at),
                    "init_errors": Bson::Null,
                    "init_warnings": to_bson(&warnings)?,
                    "test_cases": cases,
                } }
            }
            InitResult::Failed { errors } => doc! { "$set": {
                "state": ChallengeState::Failed.as_str(),
                "init_at": bson_time(at),
                "init_errors": to_bson(&errors)?,
            } },
        };
        // One write conditioned on the version read: a challenge that moved
        // on meanwhile keeps its new test cases.
        let updated = self
            .collection("challenges")
            .update_one(doc! { "_id": id, "version": version }, update)
            .await
            .map_err(backend)?;
        Ok(updated.matched_count == 1)
    }
}
