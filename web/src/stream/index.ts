export * from './contract';
export * from './gold';
