------------------------------- MODULE Dedup -------------------------------
(***************************************************************************)
(* The dedup upload race. Clients of a deduplicating store ask the index   *)
(* which fingerprints are missing (Query), upload those chunks (Upload),   *)
(* record them in the index (Record), then commit a manifest that          *)
(* references every chunk of their file (Commit). A client can crash at    *)
(* any step (Crash) and restart from Query. Every client backs up the same *)
(* file, so every fingerprint is shared.                                   *)
(*                                                                         *)
(* VARIANT "naive": the index lists a fingerprint as soon as it is asked   *)
(* about. "optimistic": lock-free, duplicate PUTs are idempotent, the      *)
(* index lists a chunk only after the store has it. "pessimistic": a       *)
(* per-fingerprint lease (Acquire); the holder uploads and records, which  *)
(* frees the lease; a crashed holder's lease is Orphaned until it expires  *)
(* (Expire), which may happen at any later step.                           *)
(*                                                                         *)
(* The variables and action names are those of model/src/dedup.rs, whose   *)
(* State struct lays out these variables in this order: the two checkers   *)
(* count the same distinct states.                                         *)
(***************************************************************************)
EXTENDS Integers, FiniteSets

CONSTANTS CLIENTS, CHUNKS, MAX_CRASHES, VARIANT

ASSUME VARIANT \in {"naive", "optimistic", "pessimistic"}
ASSUME CLIENTS \in 2..4 /\ CHUNKS \in 1..4 /\ MAX_CRASHES \in 1..3

Clients == 1..CLIENTS
Chunks == 1..CHUNKS

\* A lease is Free, held by a running client (its number), or Orphaned:
\* held by a client that crashed, and taken until it expires.
Free == 0
Orphaned == -1

VARIABLES
    pc,        \* per client: "query", "upload" (has the index's answer), "done"
    pending,   \* per client: fingerprints told missing, not yet uploaded
    uploaded,  \* per client: chunks uploaded, not yet recorded in the index
    store,     \* the chunks the store holds
    index,     \* the fingerprints the index lists as present
    lease,     \* per chunk: Free, a holder, or Orphaned
    puts,      \* per chunk: PUTs since its lease last expired (history)
    expired,   \* chunks whose lease has expired at least once (history)
    crashes    \* crashes so far, across all clients

vars == <<pc, pending, uploaded, store, index, lease, puts, expired, crashes>>

TypeOK ==
    /\ pc \in [Clients -> {"query", "upload", "done"}]
    /\ pending \in [Clients -> SUBSET Chunks]
    /\ uploaded \in [Clients -> SUBSET Chunks]
    /\ store \subseteq Chunks
    /\ index \subseteq Chunks
    /\ lease \in [Chunks -> {Free, Orphaned} \cup Clients]
    /\ puts \in [Chunks -> 0..(CLIENTS * (MAX_CRASHES + 1))]
    /\ expired \subseteq Chunks
    /\ crashes \in 0..MAX_CRASHES

Init ==
    /\ pc = [c \in Clients |-> "query"]
    /\ pending = [c \in Clients |-> {}]
    /\ uploaded = [c \in Clients |-> {}]
    /\ store = {}
    /\ index = {}
    /\ lease = [k \in Chunks |-> Free]
    /\ puts = [k \in Chunks |-> 0]
    /\ expired = {}
    /\ crashes = 0

\* The naive index marks every asked fingerprint present: that is the bug.
Query(c) ==
    /\ pc[c] = "query"
    /\ pending' = [pending EXCEPT ![c] = Chunks \ index]
    /\ pc' = [pc EXCEPT ![c] = "upload"]
    /\ index' = IF VARIANT = "naive" THEN index \cup pending'[c] ELSE index
    /\ UNCHANGED <<uploaded, store, lease, puts, expired, crashes>>

\* The index grants a free lease only on a fingerprint it still lacks; for
\* one recorded meanwhile it answers "present" and the client drops it.
Acquire(c, k) ==
    /\ VARIANT = "pessimistic"
    /\ pc[c] = "upload"
    /\ k \in pending[c]
    /\ lease[k] = Free
    /\ IF k \in index
         THEN /\ pending' = [pending EXCEPT ![c] = @ \ {k}]
              /\ UNCHANGED lease
         ELSE /\ lease' = [lease EXCEPT ![k] = c]
              /\ UNCHANGED pending
    /\ UNCHANGED <<pc, uploaded, store, index, puts, expired, crashes>>

Upload(c, k) ==
    /\ pc[c] = "upload"
    /\ k \in pending[c]
    /\ VARIANT = "pessimistic" => lease[k] = c
    /\ store' = store \cup {k}
    /\ pending' = [pending EXCEPT ![c] = @ \ {k}]
    /\ uploaded' = IF VARIANT = "naive" THEN uploaded
                   ELSE [uploaded EXCEPT ![c] = @ \cup {k}]
    /\ puts' = [puts EXCEPT ![k] = @ + 1]
    /\ UNCHANGED <<pc, index, lease, expired, crashes>>

Record(c, k) ==
    /\ VARIANT # "naive"
    /\ k \in uploaded[c]
    /\ index' = index \cup {k}
    /\ uploaded' = [uploaded EXCEPT ![c] = @ \ {k}]
    /\ lease' = IF VARIANT = "pessimistic" THEN [lease EXCEPT ![k] = Free] ELSE lease
    /\ UNCHANGED <<pc, pending, store, puts, expired, crashes>>

Commit(c) ==
    /\ pc[c] = "upload"
    /\ pending[c] = {}
    /\ uploaded[c] = {}
    /\ pc' = [pc EXCEPT ![c] = "done"]
    /\ UNCHANGED <<pending, uploaded, store, index, lease, puts, expired, crashes>>

Crash(c) ==
    /\ pc[c] # "done"
    /\ crashes < MAX_CRASHES
    /\ pc' = [pc EXCEPT ![c] = "query"]
    /\ pending' = [pending EXCEPT ![c] = {}]
    /\ uploaded' = [uploaded EXCEPT ![c] = {}]
    /\ lease' = [k \in Chunks |-> IF lease[k] = c THEN Orphaned ELSE lease[k]]
    /\ crashes' = crashes + 1
    /\ UNCHANGED <<store, index, puts, expired>>

\* Enabled only once the holder has crashed: a running holder renews its
\* lease. Any step after the crash may be the one at which the TTL runs out.
Expire(k) ==
    /\ lease[k] = Orphaned
    /\ lease' = [lease EXCEPT ![k] = Free]
    /\ expired' = expired \cup {k}
    /\ puts' = [puts EXCEPT ![k] = 0]
    /\ UNCHANGED <<pc, pending, uploaded, store, index, crashes>>

Next ==
    \/ \E c \in Clients : Query(c) \/ Commit(c) \/ Crash(c)
    \/ \E c \in Clients, k \in Chunks : Acquire(c, k) \/ Upload(c, k) \/ Record(c, k)
    \/ \E k \in Chunks : Expire(k)

\* Weak fairness on Next: a client that can move eventually does (no step waits on
\* another forever unless nothing at all can move).
Spec == Init /\ [][Next]_vars /\ WF_vars(Next)

-----------------------------------------------------------------------------
(* Safety. A chunk is Lost when the index lists it (so no client will ever *)
(* be told to upload it again: the index only grows), the store lacks it,  *)
(* and no client still holds an upload of it: no behaviour stores it.      *)

AnyCommitted == \E c \in Clients : pc[c] = "done"
Lost(k) == k \in index /\ k \notin store /\ \A c \in Clients : k \notin pending[c]
Unrecorded(k) == k \in store /\ k \notin index /\ \A c \in Clients : k \notin uploaded[c]

IndexOnlyListsStored == index \subseteq store
CommittedRestorable == AnyCommitted => Chunks \subseteq store
NoCommittedChunkLost == AnyCommitted => ~\E k \in Chunks : Lost(k)
\* Vacuous in the lease-free variants, whose leases stay Free.
NoDuplicateUploadUnderLease == \A k \in Chunks : lease[k] \in Clients => puts[k] <= 1

\* Liveness. Every behaviour reaches a state without successors (the state
\* graph is acyclic: model/src/dedup.rs gives the measure every step raises),
\* so this holds exactly when every such state has every client committed:
\* stateright checks it that way.
EveryClientCommitsGoal == \A c \in Clients : pc[c] = "done"
EveryClientCommits == <>EveryClientCommitsGoal

-----------------------------------------------------------------------------
(* Witnesses: states that must be reachable (stateright's `sometimes`).    *)
(* RaceOnFingerprint and CrashMidUpload in every variant, DuplicateUpload  *)
(* in optimistic, WaitOnLease and ReuploadAfterExpiry in pessimistic.      *)

RaceOnFingerprint ==
    /\ Cardinality({c \in Clients : pc[c] = "upload"}) >= 2
    /\ ~(Chunks \subseteq store)
CrashMidUpload == \E k \in Chunks : Lost(k) \/ Unrecorded(k)
DuplicateUpload == \E k \in Chunks : puts[k] >= 2
WaitOnLease ==
    \E c \in Clients, k \in Chunks : k \in pending[c] /\ lease[k] \notin {Free, Orphaned, c}
ReuploadAfterExpiry == \E k \in expired : puts[k] = 1

=============================================================================
