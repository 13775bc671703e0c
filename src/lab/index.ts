/** The lab's public API, used by the CLI (`converge lab …`), the demo and the tests. */
export { labUp, labDown, labStatus, labReset, labRemoveNode, labInfo, sshTarget } from './lab.js';
export type { LabInfo, LabNode, LabNodeStatus, LabStatus, LabUpOptions, LabOptions, LabDownResult, Log } from './lab.js';
export { stopNode, startNode, restartNode, crashNode, cutLink, restoreLink, linkState, runOnNode, runArgvOnNode, killProcess } from './faults.js';
export type { FaultOptions } from './faults.js';
export { commitDesiredState, readGitCredentials, type GitCredentials } from './gitserver.js';
export { fixedAddress } from './addresses.js';
export { labDir, labPaths, BRIDGE, HOST_ADDRESS, DEFAULT_NODES } from './paths.js';
export { sshRun, sshArgs, type SshTarget } from './ssh.js';
export { readArtifactPins, sha256File } from './artifacts.js';
