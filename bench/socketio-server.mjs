// The Socket.IO baseline for rally-bench: what many teams would pick instead. Clients `join` a
// room; every `update` a client emits is broadcast to the room as `event` (the sender included).
// Prints `listening <addr>` once bound. Usage: node bench/socketio-server.mjs [port]
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.argv[2] ?? 0);
const http = createServer();
const io = new Server(http, { transports: ['websocket'], serveClient: false, maxHttpBufferSize: 1e6 });
io.on('connection', (socket) => {
  socket.on('join', (room) => socket.join(room));
  socket.on('update', (room, payload) => io.to(room).emit('event', payload));
});
http.listen(port, '127.0.0.1', () => {
  const { address, port: bound } = http.address();
  console.log(`listening ${address}:${bound}`);
});
