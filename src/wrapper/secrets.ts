/** Names that look like credentials are never sent to an engine unless the user names them (RUSTCBUILDX_SET_ENVS). */
export const SECRET_NAME = /TOKEN|SECRET|PASSW(OR)?D|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY|AUTH/i;
