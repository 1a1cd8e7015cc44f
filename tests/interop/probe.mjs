// Identifies and pings a Canopy node from js-libp2p, an implementation of libp2p other than the
// one Canopy uses, to show that its standard protocols (TCP, Noise, Yamux, identify, ping) stay
// standard. Prints one JSON object. Usage: node probe.mjs <multiaddr ending in /p2p/<peer id>>
// Node 20 lacks Promise.withResolvers, which js-libp2p uses.
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((a, b) => { resolve = a; reject = b })
    return { promise, resolve, reject }
  }
}
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { multiaddr } = await import('@multiformats/multiaddr')

const target = multiaddr(process.argv[2])
const node = await createLibp2p({
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: { identify: identify(), ping: ping() },
})
const identified = new Promise((resolve) => {
  node.addEventListener('peer:identify', (evt) => resolve(evt.detail))
})
const rtt = await node.services.ping.ping(target)
const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('no identify within 10 s')), 10000))
const info = await Promise.race([identified, timeout])
console.log(JSON.stringify({
  ping_ms: rtt,
  peer: info.peerId.toString(),
  agent: info.agentVersion,
  protocol_version: info.protocolVersion,
  protocols: info.protocols,
}))
await node.stop()
process.exit(0)
