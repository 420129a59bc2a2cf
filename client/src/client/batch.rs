//! Batches across regions: `batch_get`, `batch_put`, `batch_delete`, one request per
//! region in parallel, re-cut when a split moves keys (see docs/ARCHITECTURE.md, "Client").

use super::*;

impl Client {
    /// Reads `keys` linearizably, across as many regions as they span: one request per
    /// region, the regions in parallel. The values (with their versions; `None`: no value)
    /// come back in the order of `keys`. Each region's part is linearizable; the batch as
    /// a whole is not a snapshot.
    pub async fn batch_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Versioned>>> {
        self.batch_get_with(keys, ReadConsistency::Linearizable)
            .await
    }

    /// [`Client::batch_get`] with the given consistency for each region's part.
    pub async fn batch_get_with(
        &self,
        keys: &[Vec<u8>],
        consistency: ReadConsistency,
    ) -> Result<Vec<Option<Versioned>>> {
        let parts = self
            .run_batch(
                "batch_get",
                keys,
                |i| keys[i].len(),
                consistency,
                false,
                |idx| {
                    let mut b = BatchGetRequest::new();
                    b.set_keys(idx.iter().map(|&i| keys[i].clone()).collect());
                    let mut req = Request::new();
                    req.set_batch_get(b);
                    req
                },
            )
            .await?;
        let mut found: HashMap<Vec<u8>, Versioned> = HashMap::new();
        for mut resp in parts {
            for mut p in resp
                .mut_response()
                .take_batch_get()
                .take_pairs()
                .into_iter()
            {
                let v = Versioned {
                    value: p.take_value(),
                    version: p.get_version(),
                };
                found.insert(p.take_key(), v);
            }
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    /// Writes every pair: one command per region (atomic within that region), the
    /// regions in parallel. A batch spanning regions is not atomic as a whole: if this
    /// fails, some regions' parts may have been applied. A key given twice gets its last
    /// value.
    pub async fn batch_put(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        // One pair per key (the last), so no two parts ever write the same key.
        let mut last: HashMap<&[u8], usize> = HashMap::new();
        for (i, (k, _)) in pairs.iter().enumerate() {
            last.insert(k.as_slice(), i);
        }
        let mut chosen: Vec<usize> = last.into_values().collect();
        chosen.sort_unstable();
        let keys: Vec<Vec<u8>> = chosen.iter().map(|&i| pairs[i].0.clone()).collect();
        let pair = |i: usize| &pairs[chosen[i]];
        self.run_batch(
            "batch_put",
            &keys,
            |i| pair(i).0.len() + pair(i).1.len(),
            ReadConsistency::Linearizable,
            true,
            |idx| {
                let mut b = BatchPutRequest::new();
                for &i in idx {
                    let mut p = kvrpcpb::KvPair::new();
                    p.set_key(pair(i).0.clone());
                    p.set_value(pair(i).1.clone());
                    b.mut_pairs().push(p);
                }
                let mut req = Request::new();
                req.set_batch_put(b);
                req
            },
        )
        .await?;
        Ok(())
    }

    /// Deletes every key of `keys`: one command per region (atomic within that region),
    /// the regions in parallel. Not atomic across regions.
    pub async fn batch_delete(&self, keys: &[Vec<u8>]) -> Result<()> {
        let mut unique: Vec<Vec<u8>> = keys.to_vec();
        unique.sort_unstable();
        unique.dedup();
        self.run_batch(
            "batch_delete",
            &unique,
            |i| unique[i].len(),
            ReadConsistency::Linearizable,
            true,
            |idx| {
                let mut b = BatchDeleteRequest::new();
                b.set_keys(idx.iter().map(|&i| unique[i].clone()).collect());
                let mut req = Request::new();
                req.set_batch_delete(b);
                req
            },
        )
        .await?;
        Ok(())
    }

    /// Runs a batch over `keys` (`weight(i)`: the bytes key `i` adds to a request): cuts
    /// it by region as the cache knows them (at most [`MAX_BATCH_KEYS`] keys and
    /// [`MAX_BATCH_BYTES`] per part), runs the parts in parallel, and cuts again whatever a
    /// split made span two regions, until every part is answered or the deadline passes.
    /// `build` makes the request for the keys at the given indices.
    ///
    /// A write part keeps its session when it is cut again: the part may have been applied
    /// before the split (its answer lost), and the regions a split makes both keep the
    /// parent's sessions, so each piece is then recognised as applied instead of applied
    /// twice. New parts get sessions of their own; all go back to the pool at the end.
    async fn run_batch(
        &self,
        op: &'static str,
        keys: &[Vec<u8>],
        weight: impl Fn(usize) -> usize,
        consistency: ReadConsistency,
        write: bool,
        build: impl Fn(&[usize]) -> Request,
    ) -> Result<Vec<KvResponse>> {
        consistency.validate()?;
        if let Some(k) = keys.iter().find(|k| k.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "{op}: an empty key ({k:?}) cannot be stored"
            )));
        }
        if let Some(i) = (0..keys.len()).find(|&i| weight(i) > MAX_BATCH_BYTES) {
            return Err(Error::InvalidArgument(format!(
                "{op}: key {:?} with its value takes {} bytes, over a batch's {MAX_BATCH_BYTES}",
                keys[i],
                weight(i)
            )));
        }
        let started = Instant::now();
        let deadline = started + self.inner.cfg.op_timeout;
        let mut sessions: Vec<Arc<crate::session::Session>> = Vec::new();
        // Per key: the session of the write part it was last sent in.
        let mut origin: Vec<Option<usize>> = vec![None; keys.len()];
        let mut remaining: Vec<usize> = (0..keys.len()).collect();
        let mut done = Vec::new();
        let mut round = 0usize;
        let result = 'batch: loop {
            if remaining.is_empty() {
                break Ok(done);
            }
            // (region, session the keys already carry, bytes, key indices)
            let mut groups: Vec<(Region, Option<usize>, usize, Vec<usize>)> = Vec::new();
            for &i in &remaining {
                let w = weight(i);
                let fits = |(r, o, bytes, g): &&mut (Region, Option<usize>, usize, Vec<usize>)| {
                    *o == origin[i]
                        && g.len() < MAX_BATCH_KEYS
                        && *bytes + w <= MAX_BATCH_BYTES
                        && key_in_range(r, &keys[i])
                };
                if let Some((_, _, bytes, g)) = groups.iter_mut().find(fits) {
                    *bytes += w;
                    g.push(i);
                    continue;
                }
                let region = loop {
                    match self.locate(&keys[i]).await {
                        Ok(c) => break c.region.clone(),
                        // PD unreachable for now: the deadline bounds the wait.
                        Err(Error::Pd(_)) if Instant::now() < deadline => {
                            tokio::time::sleep(self.inner.cfg.backoff_base).await
                        }
                        // Past the deadline: an earlier round may have sent these keys.
                        Err(e @ Error::Pd(_)) => {
                            break 'batch Err(Error::Timeout {
                                operation: op,
                                elapsed_ms: elapsed_ms(started),
                                last_error: e.to_string(),
                            })
                        }
                        Err(e) => break 'batch Err(e),
                    }
                };
                groups.push((region, origin[i], w, vec![i]));
            }
            let mut tasks = Vec::with_capacity(groups.len());
            for (_, o, _, idx) in &mut groups {
                if write && o.is_none() {
                    sessions.push(Arc::new(self.inner.sessions.take()));
                    *o = Some(sessions.len() - 1);
                }
                for &i in idx.iter() {
                    origin[i] = *o;
                }
                let session = o.map(|s| sessions[s].clone());
                let c = self.clone();
                let first = keys[idx[0]].clone();
                let others: Vec<Vec<u8>> = idx[1..].iter().map(|&i| keys[i].clone()).collect();
                let req = build(idx);
                tasks.push(tokio::spawn(async move {
                    let session = session.as_deref();
                    c.execute_keys(
                        op,
                        &first,
                        &others,
                        req,
                        consistency,
                        session,
                        deadline,
                        &Plain,
                    )
                    .await
                }));
            }
            let mut again = Vec::new();
            let mut failed = None;
            for ((_, _, _, idx), t) in groups.into_iter().zip(tasks) {
                match t.await {
                    Ok(Ok(Some(resp))) => done.push(resp),
                    Ok(Ok(None)) => again.extend(idx),
                    // "Nothing was sent" holds for this round only: an earlier round may
                    // have sent these keys before a split cut them again.
                    Ok(Err(Error::Connection { addr, reason })) if round > 0 => {
                        failed = failed.or(Some(Error::Timeout {
                            operation: op,
                            elapsed_ms: elapsed_ms(started),
                            last_error: Error::Connection { addr, reason }.to_string(),
                        }))
                    }
                    Ok(Err(e)) => failed = failed.or(Some(e)),
                    Err(e) => {
                        failed = failed.or(Some(Error::Server(format!("{op} task failed: {e}"))))
                    }
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
            if !again.is_empty() && Instant::now() >= deadline {
                break Err(Error::Timeout {
                    operation: op,
                    elapsed_ms: elapsed_ms(started),
                    last_error: "the keys kept moving between regions".into(),
                });
            }
            remaining = again;
            round += 1;
        };
        for s in sessions {
            if let Ok(s) = Arc::try_unwrap(s) {
                self.inner.sessions.put_back(s);
            }
        }
        result
    }
}
