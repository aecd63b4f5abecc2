// Helpers for suites that run the real Claude Code CLI against the scripted model.
import * as path from 'node:path'

import type ClaudeSessionSpawner from 'claude-session-spawner'
import { type ClaudeSessionConfig, type ClaudeSessionSpawnerOptions } from 'claude-session-spawner'

import { makeConfig, tempDir, tracked } from './support'

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { ScriptedModel } = require('../test-support/model-server.js')

export const CLAUDE = path.join(__dirname, '..', 'node_modules', '.bin', 'claude')

/** A real CLI on a busy CI machine: generous, and still far from a hang. */
export const E2E_MS = 60_000

const models: Array<{ stop(): Promise<void> }> = []
afterAll(async () => {
  for (const m of models.splice(0)) await m.stop()
})

/** A scripted model server, stopped after the suite. */
export async function scripted(script: unknown[]): Promise<any> {
  const model = await ScriptedModel.start(script)
  models.push(model)
  return model
}

/**
 * A session config for Claude Code talking to `model`, in a fresh directory, with an
 * empty HOME: Claude Code's Bash tool starts by running a login shell, and the tests
 * must not depend on (or wait for) the machine's dotfiles.
 */
export function claudeConfig(model: any, overrides: Partial<ClaudeSessionConfig> = {}): ClaudeSessionConfig {
  const dir = tempDir()
  const configDir = tempDir()
  const env = { ...model.env(configDir), HOME: tempDir() }
  const base = makeConfig(dir, { environmentVariables: env, ...overrides })
  base.charter.resources.allowedTools = ['bash', 'read', 'write', 'edit']
  base.charter.constraints = { forbiddenCommands: [], forbiddenPatterns: [], requiredApprovals: [] }
  return base
}

export function claudeSpawner(options: ClaudeSessionSpawnerOptions = {}): ClaudeSessionSpawner {
  return tracked({ claudePath: CLAUDE, ...options })
}

/** Every `session-message` of `s`, in order. */
export function messagesOf(s: ClaudeSessionSpawner): any[] {
  const seen: any[] = []
  s.on('session-message', ({ message }) => seen.push(message))
  return seen
}

/** What the model was told in its latest request (tool results included). */
export function lastRequestText(model: any): string {
  return JSON.stringify(model.conversation.at(-1).body.messages)
}
