/**
 * The record key of the unit tests, and reading a Service's record the way the controller
 * does: what it would trust, what it would refuse.
 */
import type { Service } from "../../src/kube/objects.ts"
import { readRecord, type ReadRecord, type RecordCheck, type RecordedMapping } from "../../src/controller/MappingRecord.ts"
import { RecordKey } from "../../src/controller/RecordKey.ts"

/** A fixed 32-byte key: a test's signatures are the same on every run. */
export const TEST_KEY = new Uint8Array(32).fill(7)

export const testRecordKey = RecordKey.layerStatic(TEST_KEY)

/** The RecordKey service itself, for tests that sign a record by hand. */
export const testRecordKeyService: RecordKey["Service"] = RecordKey.makeStatic(TEST_KEY)

export const testRecordCheck: RecordCheck = { key: testRecordKeyService, clusterName: "kubernetes" }

/** The record as the controller reads it (cluster `kubernetes`, the test key). */
export const recordOf = (service: Service | undefined): ReadRecord =>
  service === undefined ? { trusted: [], refused: [], stale: false } : readRecord(service, testRecordCheck)

/** Only the entries the controller would act on. */
export const trustedRecord = (service: Service | undefined): ReadonlyArray<RecordedMapping> => recordOf(service).trusted
