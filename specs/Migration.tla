------------------------------ MODULE Migration ------------------------------
(***************************************************************************)
(* Dual-write migration of a key-value store X to a store Y: the twin of   *)
(* model/src/migration.rs, with the same variables, the same action names  *)
(* and the same property names (see that file's doc for the design and why *)
(* the fixed variant is correct).                                          *)
(*                                                                         *)
(* X starts with every key at [val |-> 1, ver |-> 1]; Y starts empty. Each *)
(* writer does one put or delete: X applies it and acknowledges its        *)
(* version, then the writer sends it to Y, where it is in flight until Y   *)
(* receives it (DeliverY). A writer may crash between the two writes. The  *)
(* backfill sends a copy of each key from X to Y, in flight as well.       *)
(*                                                                         *)
(* Variant "naive": Y takes whatever arrives, deletes are physical (the    *)
(* entry becomes Absent), the backfill skips keys X no longer has, and     *)
(* verify only waits for X and Y to hold equal values.                     *)
(* Variant "fixed": X assigns versions, every write to Y is apply-if-newer, *)
(* deletes are versioned tombstones, verify repairs keys where X is newer. *)
(***************************************************************************)
EXTENDS Naturals, FiniteSets

CONSTANTS NumWriters, NumKeys, NumValues, Variant

ASSUME Variant \in {"naive", "fixed"}

Writers == 1..NumWriters
Keys == 1..NumKeys
Values == 1..NumValues
Fixed == Variant = "fixed"
NoValue == 0
Absent == [val |-> NoValue, ver |-> 0]
Backfiller == 0   \* the src of a backfill copy; writers are 1..NumWriters
WritePhases == {"DualWrite", "Backfill", "Verify"}
Busy == {"WroteX", "SentY"}

VARIABLES phase, x, y, writer, inflightY, backfilled
vars == <<phase, x, y, writer, inflightY, backfilled>>

Init ==
    /\ phase = "DualWrite"
    /\ x = [k \in Keys |-> [val |-> 1, ver |-> 1]]
    /\ y = [k \in Keys |-> Absent]
    /\ writer = [w \in Writers |-> [pc |-> "Idle", key |-> 0, val |-> NoValue, ver |-> 0]]
    /\ inflightY = {}
    /\ backfilled = {}

\* A store receiving entry e for key k: fixed only moves versions forward.
Apply(store, k, e) ==
    IF ~Fixed \/ e.ver > store[k].ver THEN [store EXCEPT ![k] = e] ELSE store

\* X's next entry for a put of v, or a delete when v = NoValue.
XEntry(k, v) ==
    IF Fixed \/ v # NoValue THEN [val |-> v, ver |-> x[k].ver + 1] ELSE Absent

\* Every key copied and no copy still in flight.
BackfillDone(b, msgs) == b = Keys /\ \A m \in msgs : m.src # Backfiller

Quiet(k) ==
    /\ \A w \in Writers : writer[w].key = k => writer[w].pc \notin Busy
    /\ \A m \in inflightY : m.key # k
HasWriter(k, pc) == \E w \in Writers : writer[w].key = k /\ writer[w].pc = pc
Settled(k) == Quiet(k) /\ ~HasWriter(k, "Crashed")
AllQuiet == inflightY = {} /\ \A w \in Writers : writer[w].pc \notin Busy
StaleKeys == {k \in Keys : Quiet(k) /\ x[k].ver > y[k].ver}
StoresAgree == \A k \in Keys : IF Fixed THEN x[k] = y[k] ELSE x[k].val = y[k].val

\* WriteX and DeleteX spell out the same step (rather than share an operator) so that
\* TLC's traces name them; v = NoValue is a delete.
WriteX(w, k, v) ==
    /\ phase \in WritePhases
    /\ writer[w].pc = "Idle"
    /\ x' = [x EXCEPT ![k] = XEntry(k, v)]
    /\ writer' = [writer EXCEPT ![w] =
                    [pc |-> "WroteX", key |-> k, val |-> v, ver |-> XEntry(k, v).ver]]
    /\ UNCHANGED <<phase, y, inflightY, backfilled>>

DeleteX(w, k) ==
    /\ phase \in WritePhases
    /\ writer[w].pc = "Idle"
    /\ x' = [x EXCEPT ![k] = XEntry(k, NoValue)]
    /\ writer' = [writer EXCEPT ![w] =
                    [pc |-> "WroteX", key |-> k, val |-> NoValue, ver |-> XEntry(k, NoValue).ver]]
    /\ UNCHANGED <<phase, y, inflightY, backfilled>>

SendY(w) ==
    /\ writer[w].pc = "WroteX"
    /\ inflightY' = inflightY \cup {[src |-> w, key |-> writer[w].key,
                                     val |-> writer[w].val, ver |-> writer[w].ver]}
    /\ writer' = [writer EXCEPT ![w].pc = "SentY"]
    /\ UNCHANGED <<phase, x, y, backfilled>>

WriteY(w) == writer[w].val # NoValue /\ SendY(w)

DeleteY(w) == writer[w].val = NoValue /\ SendY(w)

\* Y receives the message in flight from s (a writer, or Backfiller) for key k; a writer
\* has one operation and the backfill one copy per key, so (s, k) names one message.
DeliverY(s, k) ==
    \E m \in inflightY :
        /\ m.src = s
        /\ m.key = k
        /\ y' = Apply(y, k, [val |-> m.val, ver |-> m.ver])
        /\ inflightY' = inflightY \ {m}
        /\ writer' = IF s = Backfiller THEN writer ELSE [writer EXCEPT ![s].pc = "Done"]
        /\ phase' = IF phase = "Backfill" /\ BackfillDone(backfilled, inflightY')
                    THEN "Verify" ELSE phase
        /\ UNCHANGED <<x, backfilled>>

CrashWriter(w) ==
    /\ writer[w].pc = "WroteX"
    /\ writer' = [writer EXCEPT ![w].pc = "Crashed"]
    /\ UNCHANGED <<phase, x, y, inflightY, backfilled>>

\* The naive scan never sees a key X no longer has: nothing to copy.
Backfill(k) ==
    /\ phase \in {"DualWrite", "Backfill"}
    /\ k \notin backfilled
    /\ backfilled' = backfilled \cup {k}
    /\ inflightY' = IF ~Fixed /\ x[k].val = NoValue THEN inflightY
                    ELSE inflightY \cup {[src |-> Backfiller, key |-> k,
                                          val |-> x[k].val, ver |-> x[k].ver]}
    /\ phase' = IF BackfillDone(backfilled', inflightY') THEN "Verify" ELSE "Backfill"
    /\ UNCHANGED <<x, y, writer>>

\* One verify pass (fixed only): repair every quiet key where X is newer.
Verify ==
    /\ Fixed
    /\ phase = "Verify"
    /\ StaleKeys # {}
    /\ y' = [k \in Keys |-> IF k \in StaleKeys THEN x[k] ELSE y[k]]
    /\ UNCHANGED <<phase, x, writer, inflightY, backfilled>>

SwitchReads ==
    /\ phase = "Verify"
    /\ AllQuiet
    /\ StoresAgree
    /\ phase' = "ReadFromY"
    /\ UNCHANGED <<x, y, writer, inflightY, backfilled>>

StopWritingX ==
    /\ phase = "ReadFromY"
    /\ phase' = "StopWritingX"
    /\ UNCHANGED <<x, y, writer, inflightY, backfilled>>

Finish ==
    /\ phase = "StopWritingX"
    /\ phase' = "Done"
    /\ UNCHANGED <<x, y, writer, inflightY, backfilled>>

Next ==
    \/ \E w \in Writers, k \in Keys, v \in Values : WriteX(w, k, v)
    \/ \E w \in Writers, k \in Keys : DeleteX(w, k)
    \/ \E w \in Writers : WriteY(w) \/ DeleteY(w) \/ CrashWriter(w)
    \/ \E s \in 0..NumWriters, k \in Keys : DeliverY(s, k)
    \/ \E k \in Keys : Backfill(k)
    \/ Verify \/ SwitchReads \/ StopWritingX \/ Finish

Spec == Init /\ [][Next]_vars /\ WF_vars(Next)

-----------------------------------------------------------------------------
(* Safety. *)

SameValue(k) == x[k].val = y[k].val

DualWritesConverge ==
    phase = "DualWrite" =>
        \A k \in Keys : (Settled(k) /\ HasWriter(k, "Done")) => SameValue(k)

BackfillKeepsNewer ==
    \A k \in Keys : (k \in backfilled /\ Settled(k) /\ x[k].val # NoValue) => SameValue(k)

DeletedStaysDeleted ==
    \A k \in Keys : (Settled(k) /\ x[k].val = NoValue) => y[k].val = NoValue

\* No action is enabled, written out: ~ENABLED Next would cost TLC a second evaluation of
\* Next in every state. NoStepLeftIsExact pins the two together (checked by the tests).
NoStepLeft ==
    /\ \A w \in Writers : /\ writer[w].pc # "WroteX"
                          /\ writer[w].pc = "Idle" => phase \notin WritePhases
    /\ inflightY = {}
    /\ phase \in {"DualWrite", "Backfill"} => backfilled = Keys
    /\ phase = "Verify" => ~(Fixed /\ StaleKeys # {}) /\ ~(AllQuiet /\ StoresAgree)
    /\ phase \notin {"ReadFromY", "StopWritingX"}
NoStepLeftIsExact == NoStepLeft = ~ENABLED Next

\* Every action changes the state when enabled, so NoStepLeft is the end of a behaviour.
CrashRepaired ==
    NoStepLeft => \A k \in Keys : HasWriter(k, "Crashed") => SameValue(k)

(* Liveness: the state graph is acyclic (see migration.rs), so under weak     *)
(* fairness this is the stateright check "every state with no step is Done". *)
CompletesGoal == phase = "Done"
Completes == <>CompletesGoal

(* Witnesses that the races are reached (checked by stateright as sometimes). *)
TwoWritersRaceOneKey ==
    \E v, w \in Writers : v # w /\ writer[v].pc \in Busy /\ writer[w].pc \in Busy
                          /\ writer[v].key = writer[w].key
BackfillRacesWrite ==
    \E m \in inflightY : m.src = Backfiller /\ x[m.key] # [val |-> m.val, ver |-> m.ver]
CrashMidDualWrite == \E w \in Writers : writer[w].pc = "Crashed"
=============================================================================
