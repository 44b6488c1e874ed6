//! What the clinical-support pools read of every episode: its case mix, its first score, number
//! of scores and scores at sessions 2–3 per instrument, whether an end is recorded and its last
//! day. Read from the tables it is a pass over five of them (~0.4 s at 10^5 episodes, row by
//! row through SQLite and the page cipher); so the import's alert check (or the first reader
//! after an import) keeps it in table `support_features` as one blob of columns, and later
//! readers read that (~0.07 s). The blob names the last import it saw and is used only while
//! that is still the last one; an erasure deletes it (it holds the erased patient's features).
//! Whether an episode has ended depends on `[import] episode_gap_weeks`, so that is decided
//! when the blob is read, not kept in it.

use std::collections::HashMap;

use anyhow::Result;
use protocol::instrument::Instrument;
use protocol::trajectory::{Feature, Table};
use rusqlite::{Connection, OptionalExtension, params};

/// The case-mix features, in order.
pub(super) const CASEMIX: [&str; 8] = [
    "age",
    "female",
    "unemployed",
    "duration of the problem",
    "prior treatment",
    "medication",
    "comorbidity count",
    "WSAS",
];

/// The blob's layout version: a blob of another version is rebuilt.
const FORMAT: u8 = 1;

/// The kept blob still holds the store (?1 its format, ?2 the newest import).
const CURRENT: &str = "format = ?1 AND last_import_id IS ?2";

/// One instrument's columns: per episode (first score, number of scores), scores at 2 and 3.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Scores {
    pub(super) first: Vec<Option<(f64, u32)>>,
    pub(super) early: Vec<[Option<f64>; 2]>,
}

/// Every episode's features, as stored (before `episode_gap_weeks` decides which have ended).
#[derive(Debug, Clone, PartialEq, Default)]
struct Columns {
    ids: Vec<i64>,
    /// An end date or end reason is recorded.
    has_end: Vec<bool>,
    /// The end date, else the last session's date.
    last_day: Vec<Option<String>>,
    /// The newest session date in the store.
    newest: Option<String>,
    /// Per case-mix feature (`CASEMIX` order), per episode.
    casemix: Vec<Vec<Option<f64>>>,
    /// Per instrument id.
    scores: Vec<(String, Scores)>,
}

/// Every episode's features for the registered instruments, with whether it has ended.
pub(super) struct Episodes {
    /// episode rowid → index.
    pub(super) index: HashMap<i64, usize>,
    pub(super) ids: Vec<i64>,
    pub(super) ended: Vec<bool>,
    /// The end date, else the last session's date.
    pub(super) last_day: Vec<Option<String>>,
    /// Per case-mix feature (`CASEMIX` order), per episode.
    pub(super) casemix: Vec<Vec<Option<f64>>>,
    /// Per instrument (registry order).
    pub(super) scores: Vec<Scores>,
}

impl Episodes {
    /// The features for instrument `k`: its intake (weight 2), the other intakes, case mix.
    pub(super) fn names(instruments: &[Instrument], k: usize) -> Vec<Feature> {
        let intake = |i: &Instrument, weight| Feature {
            name: format!("{} at intake", i.id),
            weight,
        };
        std::iter::once(intake(&instruments[k], 2.0))
            .chain(
                instruments
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != k)
                    .map(|(_, i)| intake(i, 1.0)),
            )
            .chain(CASEMIX.iter().map(|n| Feature {
                name: (*n).to_string(),
                weight: 1.0,
            }))
            .collect()
    }

    /// Episode `i`'s feature values for instrument `k`, in [`Episodes::names`] order.
    pub(super) fn row(&self, k: usize, i: usize) -> Vec<Option<f64>> {
        let one = [i];
        let table = self.table(k, &one);
        (0..self.scores.len() + CASEMIX.len())
            .map(|feature| table.value(0, feature))
            .collect()
    }

    /// Whether episode `i` has ended with at least two scores on instrument `k` (what every
    /// pool asks of its members before its own rule).
    pub(super) fn poolable(&self, k: usize, i: usize) -> bool {
        self.ended[i] && self.scores[k].first[i].is_some_and(|(_, n)| n >= 2)
    }

    /// The rows of episodes `members` for instrument `k`, read from the columns in place.
    pub(super) fn table<'a>(&'a self, k: usize, members: &'a [usize]) -> PoolTable<'a> {
        PoolTable {
            episodes: self,
            members,
            intakes: std::iter::once(k)
                .chain((0..self.scores.len()).filter(|j| *j != k))
                .collect(),
        }
    }
}

/// [`Episodes::table`]: pool members' rows in [`Episodes::names`] order, as a
/// [`protocol::trajectory::Table`].
pub(super) struct PoolTable<'a> {
    episodes: &'a Episodes,
    members: &'a [usize],
    /// The instrument of each intake feature.
    intakes: Vec<usize>,
}

impl Table for PoolTable<'_> {
    fn rows(&self) -> usize {
        self.members.len()
    }

    fn value(&self, row: usize, feature: usize) -> Option<f64> {
        let i = self.members[row];
        match self.intakes.get(feature) {
            Some(j) => self.episodes.scores[*j].first[i].map(|(s, _)| s),
            None => self.episodes.casemix.get(feature - self.intakes.len())?[i],
        }
    }
}

/// Reads every episode's features: from `support_features` while it is current, else from the
/// tables (and then keeps them there, when the store can be written at once).
pub(super) fn load(
    conn: &Connection,
    instruments: &[Instrument],
    gap_weeks: u32,
) -> Result<Episodes> {
    let last_import = last_import(conn)?;
    let cached: Option<Vec<u8>> = conn
        .query_row(
            &format!("SELECT data FROM support_features WHERE {CURRENT}"),
            params![FORMAT, last_import],
            |r| r.get(0),
        )
        .optional()?;
    let columns = match cached.as_deref().and_then(decode) {
        Some(c) => c,
        None => rebuild(conn, last_import)?,
    };
    columns.episodes(conn, instruments, gap_weeks)
}

/// Keeps the features current (after an import), so that the next reader need not read the
/// tables.
pub(super) fn refresh(conn: &Connection) -> Result<()> {
    let last_import = last_import(conn)?;
    let current: bool = conn.query_row(
        &format!("SELECT EXISTS (SELECT 1 FROM support_features WHERE {CURRENT})"),
        params![FORMAT, last_import],
        |r| r.get(0),
    )?;
    if !current {
        rebuild(conn, last_import)?;
    }
    Ok(())
}

fn last_import(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn.query_row("SELECT max(import_id) FROM imports", [], |r| r.get(0))?)
}

/// The features read from the tables, and kept.
fn rebuild(conn: &Connection, last_import: Option<i64>) -> Result<Columns> {
    let c = read_tables(conn)?;
    // A cache: a store that cannot be written now (a full disk, another writer) is read from
    // the tables again next time.
    let _ = keep(conn, last_import, &c);
    Ok(c)
}

/// Every episode's features from the tables.
fn read_tables(conn: &Connection) -> Result<Columns> {
    let mut c = Columns {
        casemix: vec![Vec::new(); CASEMIX.len()],
        ..Columns::default()
    };
    let mut stmt = conn.prepare(
        "SELECT e.episode_id, e.end_date IS NOT NULL OR e.end_reason IS NOT NULL,
                coalesce(e.end_date, (SELECT date FROM session s WHERE s.episode_id = e.episode_id
                                      ORDER BY seq DESC LIMIT 1)),
                c.age, CASE WHEN p.sex IN ('female', 'male') THEN p.sex = 'female' END,
                CASE WHEN c.employment IS NULL THEN NULL ELSE c.employment = 'unemployed' END,
                c.duration_of_problem_months, c.prior_treatment, c.psychotropic_med,
                c.comorbidity_count, c.wsas
         FROM episode e JOIN patient p USING (patient_id) LEFT JOIN casemix c USING (episode_id)
         ORDER BY e.episode_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        c.ids.push(r.get(0)?);
        c.has_end.push(r.get(1)?);
        c.last_day.push(r.get(2)?);
        for (k, column) in c.casemix.iter_mut().enumerate() {
            column.push(r.get::<_, Option<f64>>(3 + k)?);
        }
    }
    c.newest = conn.query_row("SELECT max(date) FROM session", [], |r| r.get(0))?;
    let index: HashMap<i64, usize> = c.ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut stmt = conn.prepare(
        "SELECT episode_id, instrument_id, first_score, n, score_s2, score_s3 FROM episode_scores
         ORDER BY instrument_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let Some(i) = index.get(&r.get::<_, i64>(0)?).copied() else {
            continue;
        };
        let inst = r.get_ref(1)?.as_str()?;
        if c.scores.last().is_none_or(|(id, _)| id != inst) {
            c.scores.push((
                inst.to_string(),
                Scores {
                    first: vec![None; c.ids.len()],
                    early: vec![[None; 2]; c.ids.len()],
                },
            ));
        }
        let s = &mut c.scores.last_mut().expect("pushed").1;
        s.first[i] = Some((r.get(2)?, r.get(3)?));
        s.early[i] = [r.get(4)?, r.get(5)?];
    }
    Ok(c)
}

/// Keeps `c` as the features of the store after import `last_import`.
fn keep(conn: &Connection, last_import: Option<i64>, c: &Columns) -> Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "INSERT OR REPLACE INTO support_features (id, format, last_import_id, episodes, data)
         VALUES (1, ?1, ?2, ?3, ?4)",
        params![FORMAT, last_import, c.ids.len(), encode(c)],
    )?;
    tx.commit()?;
    Ok(())
}

impl Columns {
    /// The episodes for `instruments` (an instrument without scores has none), ended as
    /// `support::ENDED` says: an end recorded, else the last session more than `gap_weeks`
    /// before the newest session in the store.
    fn episodes(
        self,
        conn: &Connection,
        instruments: &[Instrument],
        gap_weeks: u32,
    ) -> Result<Episodes> {
        let cutoff: Option<String> = conn.query_row(
            "SELECT date(?1, printf('-%d days', ?2))",
            params![self.newest, i64::from(gap_weeks) * 7],
            |r| r.get(0),
        )?;
        let ended = self
            .has_end
            .iter()
            .zip(&self.last_day)
            .map(|(end, last)| *end || matches!((last, &cutoff), (Some(d), Some(c)) if d < c))
            .collect();
        let n = self.ids.len();
        let mut by_id: HashMap<String, Scores> = self.scores.into_iter().collect();
        Ok(Episodes {
            index: self
                .ids
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, i))
                .collect(),
            ids: self.ids,
            ended,
            last_day: self.last_day,
            casemix: self.casemix,
            scores: instruments
                .iter()
                .map(|i| {
                    by_id.remove(&i.id).unwrap_or_else(|| Scores {
                        first: vec![None; n],
                        early: vec![[None; 2]; n],
                    })
                })
                .collect(),
        })
    }
}

// The blob: little-endian columns. A number column is f32 when every value in it is one
// exactly (scores, ages, flags, counts: most), else f64; a missing number is NaN (SQLite keeps
// no NaN: it reads one back as NULL). A missing text has length 255.

fn encode(c: &Columns) -> Vec<u8> {
    let n = c.ids.len();
    let mut out = Vec::with_capacity(16 + n * (8 + 12 + 4 * CASEMIX.len() + c.scores.len() * 16));
    out.push(FORMAT);
    out.extend((n as u64).to_le_bytes());
    for id in &c.ids {
        out.extend(id.to_le_bytes());
    }
    out.extend(c.has_end.iter().map(|b| u8::from(*b)));
    for d in &c.last_day {
        text(&mut out, d.as_deref());
    }
    text(&mut out, c.newest.as_deref());
    for column in &c.casemix {
        numbers(&mut out, column);
    }
    out.push(c.scores.len() as u8);
    for (id, s) in &c.scores {
        text(&mut out, Some(id));
        let first: Vec<Option<f64>> = s.first.iter().map(|f| f.map(|(v, _)| v)).collect();
        numbers(&mut out, &first);
        for f in &s.first {
            out.extend(f.map_or(0, |(_, k)| k).to_le_bytes());
        }
        for t in 0..2 {
            let column: Vec<Option<f64>> = s.early.iter().map(|e| e[t]).collect();
            numbers(&mut out, &column);
        }
    }
    out
}

/// One number column: its width (4 or 8), then its values.
fn numbers(out: &mut Vec<u8>, column: &[Option<f64>]) {
    let value = |v: &Option<f64>| v.unwrap_or(f64::NAN);
    let narrow = column
        .iter()
        .map(value)
        .all(|v| v.is_nan() || f64::from(v as f32) == v);
    if narrow {
        out.push(4);
        for v in column {
            out.extend((value(v) as f32).to_le_bytes());
        }
    } else {
        out.push(8);
        for v in column {
            out.extend(value(v).to_le_bytes());
        }
    }
}

fn text(out: &mut Vec<u8>, t: Option<&str>) {
    match t {
        Some(t) if t.len() < 255 => {
            out.push(t.len() as u8);
            out.extend(t.as_bytes());
        }
        _ => out.push(255),
    }
}

/// The columns of a blob; `None` for one of another version or cut short (then it is rebuilt).
fn decode(blob: &[u8]) -> Option<Columns> {
    let mut r = Reader(blob);
    if r.take(1)?[0] != FORMAT {
        return None;
    }
    let n = usize::try_from(u64::from_le_bytes(r.array()?)).ok()?;
    let mut c = Columns {
        ids: r
            .take(n.checked_mul(8)?)?
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        has_end: r.take(n)?.iter().map(|b| *b != 0).collect(),
        ..Columns::default()
    };
    c.last_day = (0..n).map(|_| r.text()).collect::<Option<_>>()?;
    c.newest = r.text()?;
    c.casemix = (0..CASEMIX.len())
        .map(|_| r.numbers(n))
        .collect::<Option<_>>()?;
    let instruments = r.take(1)?[0];
    for _ in 0..instruments {
        let id = r.text()??;
        let values = r.numbers(n)?;
        let counts = r.take(n.checked_mul(4)?)?.chunks_exact(4);
        let first = values
            .into_iter()
            .zip(counts)
            .map(|(v, k)| v.map(|v| (v, u32::from_le_bytes(k.try_into().expect("4 bytes")))))
            .collect();
        let (s2, s3) = (r.numbers(n)?, r.numbers(n)?);
        let early = s2.into_iter().zip(s3).map(|(a, b)| [a, b]).collect();
        c.scores.push((id, Scores { first, early }));
    }
    r.0.is_empty().then_some(c)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A number column of `n` values ([`numbers`]).
    fn numbers(&mut self, n: usize) -> Option<Vec<Option<f64>>> {
        let present = |v: f64| (!v.is_nan()).then_some(v);
        match self.take(1)?[0] {
            4 => Some(
                self.take(n.checked_mul(4)?)?
                    .chunks_exact(4)
                    .map(|b| present(f64::from(f32::from_le_bytes(b.try_into().expect("4")))))
                    .collect(),
            ),
            8 => Some(
                self.take(n.checked_mul(8)?)?
                    .chunks_exact(8)
                    .map(|b| present(f64::from_le_bytes(b.try_into().expect("8"))))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// `Some(None)` for a missing text, `None` when cut short.
    fn text(&mut self) -> Option<Option<String>> {
        let len = self.take(1)?[0];
        if len == 255 {
            return Some(None);
        }
        let bytes = self.take(usize::from(len))?;
        Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
    }
}

#[cfg(test)]
mod tests {
    use protocol::pseudonym::Pseudonymiser;

    use super::*;
    use crate::store::Store;

    fn sample() -> Columns {
        Columns {
            ids: vec![3, 7, 9],
            has_end: vec![true, false, false],
            last_day: vec![Some("2025-01-02".into()), None, Some("2025-03-04".into())],
            newest: Some("2025-03-04".into()),
            casemix: (0..CASEMIX.len())
                .map(|k| vec![Some(k as f64 + 0.1), None, Some(-2.5)])
                .collect(),
            scores: vec![
                (
                    "GAD-7".into(),
                    Scores {
                        first: vec![Some((12.0, 4)), None, Some((0.0, 1))],
                        early: vec![[Some(10.0), None], [None, None], [None, Some(3.5)]],
                    },
                ),
                (
                    "PHQ-9".into(),
                    Scores {
                        first: vec![None, Some((27.0, 2)), None],
                        early: vec![[None; 2]; 3],
                    },
                ),
            ],
        }
    }

    #[test]
    fn the_blob_gives_back_every_column() {
        let c = sample();
        assert_eq!(decode(&encode(&c)), Some(c.clone()));
        let empty = Columns {
            casemix: vec![Vec::new(); CASEMIX.len()],
            ..Columns::default()
        };
        assert_eq!(decode(&encode(&empty)), Some(empty));
    }

    #[test]
    fn a_blob_cut_short_or_of_another_format_is_not_used() {
        let blob = encode(&sample());
        for cut in [0, 1, 9, blob.len() / 2, blob.len() - 1] {
            assert_eq!(decode(&blob[..cut]), None, "cut at {cut}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert_eq!(decode(&longer), None);
        let mut other = blob;
        other[0] = FORMAT + 1;
        assert_eq!(decode(&other), None);
    }

    /// A store with one synthetic clinic of `patients` imported (its four files).
    fn clinic(patients: u32) -> (Store, Pseudonymiser, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let params = crate::synth::model::Params {
            clinics: 1,
            seed: 3,
            patients_per_clinic: Some(patients),
            ..Default::default()
        };
        crate::synth::generate_to_dir(&params, &dir.path().join("synth")).unwrap();
        let mut store = Store::open_in_memory().unwrap();
        let pseudo = Pseudonymiser::new(&[7; 32]);
        for file in ["therapists", "patients", "episodes", "assessments"] {
            let path = dir.path().join(format!("synth/clinic-01/{file}.csv"));
            crate::import::import_file(
                &mut store,
                &pseudo,
                &path,
                &Default::default(),
                "2026-12-03",
            )
            .unwrap();
        }
        (store, pseudo, dir)
    }

    fn kept(store: &Store) -> Option<(Option<i64>, usize)> {
        store
            .conn()
            .query_row(
                "SELECT last_import_id, episodes FROM support_features",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .unwrap()
    }

    #[test]
    fn the_kept_features_are_the_tables_and_end_episodes_as_the_sql_does() {
        let (store, _, _dir) = clinic(300);
        let conn = store.conn();
        let instruments = store.registry().unwrap().instruments().to_vec();
        assert_eq!(kept(&store), None);
        let fresh = load(conn, &instruments, 6).unwrap();
        let episodes: usize = conn
            .query_row("SELECT count(*) FROM episode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            kept(&store),
            Some((Some(4), episodes)),
            "kept after the last import"
        );
        let blob: Vec<u8> = conn
            .query_row("SELECT data FROM support_features", [], |r| r.get(0))
            .unwrap();
        assert_eq!(decode(&blob), Some(read_tables(conn).unwrap()));
        // Every gap: the kept columns end the same episodes as support::ENDED in SQL.
        for gap in [0, 1, 6, 52] {
            let cached = load(conn, &instruments, gap).unwrap();
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT coalesce({}, 0) FROM episode e ORDER BY episode_id",
                    crate::support::ENDED
                ))
                .unwrap();
            let sql: Vec<bool> = stmt
                .query_map([i64::from(gap) * 7], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(cached.ended, sql, "gap {gap} weeks");
            assert!(sql.iter().any(|e| *e) && sql.iter().any(|e| !*e));
        }
        let cached = load(conn, &instruments, 6).unwrap();
        assert_eq!(cached.ids, fresh.ids);
        assert_eq!(cached.last_day, fresh.last_day);
        assert_eq!(cached.casemix, fresh.casemix);
        assert_eq!(cached.scores, fresh.scores);
        let scored = cached
            .scores
            .iter()
            .filter(|s| s.first.iter().any(Option::is_some));
        assert!(scored.count() >= 2, "PHQ-9 and GAD-7 at least");
    }

    #[test]
    fn an_import_makes_the_kept_features_stale_and_an_erasure_deletes_them() {
        let (mut store, pseudo, dir) = clinic(120);
        let instruments = store.registry().unwrap().instruments().to_vec();
        load(store.conn(), &instruments, 6).unwrap();
        assert_eq!(kept(&store).unwrap().0, Some(4));
        // A later import: the next reader reads the tables and keeps them again.
        let extra = dir.path().join("more.csv");
        std::fs::write(
            &extra,
            "patient_id,therapist_id,episode_id,session,date,instrument,score\n\
             NEW-1,T-NEW,NEW-1-E1,1,2030-01-01,PHQ-9,20\n",
        )
        .unwrap();
        crate::import::import_file(&mut store, &pseudo, &extra, &Default::default(), "now")
            .unwrap();
        let after = load(store.conn(), &instruments, 6).unwrap();
        assert_eq!(kept(&store).unwrap().0, Some(5));
        let phq = instruments.iter().position(|i| i.id == "PHQ-9").unwrap();
        assert_eq!(
            after.scores[phq].first.last().copied().flatten(),
            Some((20.0, 1))
        );
        // Every episode is past the gap of the new newest date, but the new one.
        assert_eq!(after.ended.iter().filter(|e| !**e).count(), 1);
        // An erasure takes the kept features with it (they hold the erased patient's).
        let patient = std::fs::read_to_string(dir.path().join("synth/clinic-01/patients.csv"))
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let erased = crate::erasure::erase_patient(&mut store, &pseudo, &patient, true, "now")
            .unwrap()
            .episodes;
        assert!(erased >= 1);
        assert_eq!(kept(&store), None);
        let rest = load(store.conn(), &instruments, 6).unwrap();
        assert_eq!(rest.ids.len() as u64, after.ids.len() as u64 - erased);
    }
}
