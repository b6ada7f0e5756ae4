// Obtains a DPoP-bound token pair from cloakroom with panva's `dpop` library and uses it.
// Usage: node client.mjs BASE_URL EMAIL PASSWORD; prints what it saw as JSON.
import { generateKeyPair, generateProof, calculateThumbprint } from 'dpop';

const [base, email, password] = process.argv.slice(2);
const keypair = await generateKeyPair('ES256');

async function token(body) {
  const proof = await generateProof(keypair, `${base}/auth/token`, 'POST');
  const res = await fetch(`${base}/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', dpop: proof },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

async function whoami(accessToken) {
  const proof = await generateProof(keypair, `${base}/auth/whoami`, 'GET', undefined, accessToken);
  const res = await fetch(`${base}/auth/whoami`, {
    headers: { authorization: `DPoP ${accessToken}`, dpop: proof },
  });
  return { status: res.status, body: res.status === 200 ? await res.json() : null };
}

const granted = await token({ grant_type: 'password', username: email, password });
const used = await whoami(granted.body.access_token);
const refreshed = await token({ grant_type: 'refresh_token', refresh_token: granted.body.refresh_token });
const usedAgain = await whoami(refreshed.body.access_token);
console.log(JSON.stringify({
  thumbprint: await calculateThumbprint(keypair.publicKey),
  granted,
  used,
  refreshed: { status: refreshed.status, token_type: refreshed.body.token_type },
  usedAgain,
}));
