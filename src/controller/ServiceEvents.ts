/**
 * The Events a pass raises about its Service: standing conditions (a conflict, a double NAT, an
 * invalid annotation) announced on transitions only (Announcer.ts), and one-off Events (a
 * mapping repaired, the address changed), all sent in the background and yielding to the work
 * (EventSink.ts).
 */
import { Context, Effect, Layer } from "effect"
import { Kube } from "../kube/Kube.ts"
import type { Service } from "../kube/objects.ts"
import { type Announcement, makeAnnouncer } from "./Announcer.ts"
import { makeEventSink, type RecordOptions } from "./EventSink.ts"
import * as metrics from "./metrics.ts"
import { refOf, serviceKey } from "./ServiceSpec.ts"
import { WorkQueue } from "./WorkQueue.ts"

export type { Announcement } from "./Announcer.ts"

/** Events about Services. */
export class ServiceEvents extends Context.Service<ServiceEvents, {
  /**
   * Announces the conditions that were not active on this Service's last pass; forgets the
   * cleared ones. One that `fold` takes is counted as announced but not sent: the caller tells
   * it inside another Event.
   */
  readonly conditions: (
    service: Service,
    active: ReadonlyArray<Announcement>,
    options?: { readonly fold?: (announcement: Announcement) => boolean }
  ) => Effect.Effect<void>
  /**
   * Queues a one-off Event about the Service; `options` relate it to the others about the
   * Service (see EventSink's RecordOptions).
   */
  readonly send: (service: Service, announcement: Announcement, options?: RecordOptions) => Effect.Effect<void>
  /** Forgets a Service gone or released: its conditions are announced afresh if it comes back. */
  readonly forget: (key: string) => Effect.Effect<void>
  /** Events waiting to be sent, those waiting their moment included. */
  readonly queued: Effect.Effect<number>
  /** Events that would be sent now, were the work done. */
  readonly due: Effect.Effect<number>
}>()("edge-ccm/controller/ServiceEvents") {
  /** Sends through `Kube`, while busy (the work queue not idle) one per second at most. */
  static readonly layer: Layer.Layer<ServiceEvents, never, Kube | WorkQueue> = Layer.effect(
    ServiceEvents,
    Effect.gen(function*() {
      const kube = yield* Kube
      const queue = yield* WorkQueue
      const sink = yield* makeEventSink(kube, { idle: queue.idle })
      const announcer = yield* makeAnnouncer

      const send = Effect.fn("ServiceEvents.send")(
        function*(service: Service, { family, ...announcement }: Announcement, options?: RecordOptions) {
          if (announcement.reason === "PortConflict") yield* metrics.count(metrics.portConflicts, { family: family ?? "ipv4" })
          yield* sink.record({ regarding: { ...refOf(service), kind: "Service", apiVersion: "v1" }, ...announcement }, serviceKey(service), options)
        }
      )

      return ServiceEvents.of({
        conditions: Effect.fn("ServiceEvents.conditions")(
          function*(service: Service, active: ReadonlyArray<Announcement>, options?: { readonly fold?: (announcement: Announcement) => boolean }) {
            yield* announcer.conditions(
              serviceKey(service),
              active,
              (announcement) => options?.fold?.(announcement) === true ? Effect.void : send(service, announcement)
            )
          }
        ),
        send,
        forget: Effect.fn("ServiceEvents.forget")(function*(key: string) {
          yield* announcer.forget(key)
        }),
        queued: sink.queued,
        due: sink.due
      })
    })
  )
}
