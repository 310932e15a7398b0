export * from './config';
export * from './rolling';
export * from './runtime';
