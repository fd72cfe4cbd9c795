'use strict'
// dd-trace first, before anything it instruments; every setting comes from
// the environment (DD_TRACE_AGENT_URL, DD_SERVICE, DD_TRACE_FLUSH_INTERVAL,
// DD_TRACE_PROPAGATION_STYLE, DD_TRACE_SAMPLE_RATE, ...).
require('dd-trace').init()

// A Node.js program traced by Datadog's own tracer, for ddshim's interop tests
// (tests/integration/test_interop_ddtrace_js.py). Node's http module is
// instrumented by dd-trace: incoming requests get web.request spans (context
// extracted from the headers), outgoing ones http.request spans (context
// injected).
//
//   node app.js server READY_FILE
//       GET /call?url=U  fetch U with http.get, answer 200 and its body
//       GET /            200 "ok\n"
//     The port goes into READY_FILE once listening. SIGTERM/SIGINT: exit.
//   node app.js client URL
//       one http.get(URL) as a root span; prints the status and the body,
//       then lets the event loop end so dd-trace flushes before exiting.
const http = require('node:http')
const fs = require('node:fs')

function fetch (url, done) {
  http.get(url, (res) => {
    let body = ''
    res.setEncoding('utf8')
    res.on('data', (d) => { body += d })
    res.on('end', () => done(null, res.statusCode, body))
  }).on('error', (err) => done(err))
}

function server (readyFile) {
  const srv = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://localhost')
    if (u.pathname === '/call' && u.searchParams.get('url')) {
      fetch(u.searchParams.get('url'), (err, status, body) => {
        if (err) {
          res.writeHead(502, { 'Content-Type': 'text/plain' })
          res.end(String(err) + '\n')
          return
        }
        res.writeHead(200, { 'Content-Type': 'text/plain' })
        res.end(body)
      })
      return
    }
    if (u.pathname === '/') {
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      res.end('ok\n')
      return
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' })
    res.end('not found\n')
  })
  srv.keepAliveTimeout = 1000
  srv.listen(0, '127.0.0.1', () => {
    fs.writeFileSync(readyFile + '.tmp', String(srv.address().port))
    fs.renameSync(readyFile + '.tmp', readyFile)
  })
  const stop = () => process.exit(0)
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

function client (url) {
  fetch(url, (err, status, body) => {
    if (err) {
      console.error(String(err))
      process.exitCode = 1
      return
    }
    process.stdout.write(status + ' ' + body)
  })
}

const [mode, arg] = process.argv.slice(2)
if (mode === 'server' && arg) server(arg)
else if (mode === 'client' && arg) client(arg)
else {
  console.error('usage: node app.js server READY_FILE | client URL')
  process.exit(2)
}
