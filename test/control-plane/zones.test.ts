/**
 * Zones through the control plane, with real processes: each sidecar registers the zone
 * it was given, every caller learns each endpoint's zone, and a caller calls the
 * instance of its own zone.
 */
import { expect, test } from "bun:test";
import { controlPlaneFixture, eventually, serviceManifest } from "../helpers/control-plane.ts";

const fx = controlPlaneFixture("mesh-cp-zones-", serviceManifest("orders"), serviceManifest("payments"));
const sidecar = (service: string, zone: string) => fx.sidecar(service, zone, ["--zone", zone]);

test("each sidecar registers its zone, and a caller calls the instance in its own once there is one", async () => {
  const a = await sidecar("payments", "eu-1a");
  const orders = await sidecar("orders", "eu-1b");
  const zonesSeen = async () => {
    const dump = (await (await fetch(`http://127.0.0.1:${orders.ports.admin}/config_dump`)).json()) as { destinations: { name: string; endpoints: { address: string; zone?: string }[] }[] };
    return Object.fromEntries(dump.destinations.find((d) => d.name === "payments")?.endpoints.map((e) => [e.address, e.zone]) ?? []);
  };
  const call = async () => {
    const res = await fetch(`http://127.0.0.1:${orders.ports.outbound}/pay`, { headers: { host: "payments" } });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  };
  // No instance in eu-1b yet: the one in eu-1a serves.
  expect(await eventually(async () => Object.keys(await zonesSeen()).length === 1)).toBe(true);
  for (let i = 0; i < 5; i++) await call();
  expect(a.echo.hits).toBe(5);

  const b = await sidecar("payments", "eu-1b");
  expect(await eventually(async () => Object.keys(await zonesSeen()).length === 2)).toBe(true);
  expect(await zonesSeen()).toEqual({ [`127.0.0.1:${a.ports.inbound}`]: "eu-1a", [`127.0.0.1:${b.ports.inbound}`]: "eu-1b" });
  const registered = (await (await fx.cp.admin("GET", "/v1/endpoints")).json()) as { items: { service: string; zone?: string }[] };
  expect(registered.items.filter((e) => e.service === "payments").map((e) => e.zone).sort()).toEqual(["eu-1a", "eu-1b"]);
  for (let i = 0; i < 20; i++) await call();
  expect([a.echo.hits, b.echo.hits]).toEqual([5, 20]);
});
